"""Geometric fan fit: the "more complicated algorithm" that the threshold baseline is compared with.

Modules: :mod:`.suggest` (step 1), :mod:`.shapefit` (the shape for a given mask), :mod:`.candidates`
(candidate shapes for one component), :mod:`.select` (model selection), :mod:`.polish` (sub-pixel
polish), :mod:`.raster` (drawing candidates fast), :mod:`.primitives` (robust lines and circles); the
evidence is :mod:`UltrasoundRefineLib.automask.evidence`, the shapes :mod:`UltrasoundRefineLib.geometry`.

Why a fit: the scanner's image region is always one of a few shapes (``geometry.Sector`` with a
pointed or flat apex or a curved top, ``geometry.Rectangle``, or two of them side by side), while
what a scan shows of it is patchy: black fluid, a black far field or a probe held in air leave its
edges invisible in places, and text, ticks and traces lie against them. Fitting the shape to the
evidence restores the exact edges where the evidence is weak.

:func:`suggest_fanfit` (step 1):

1. Evidence (:mod:`.evidence`): the noise floor above the screen's background, motion, strokes
   removed, per area (each image-region box of the loop, or the whole frame), read several ways
   (:func:`.evidence.candidates`).
2. Per reading: the views side by side, each one's convex hull (the dark parts of the region along
   its edge come back), the shape fitted to the hull (:func:`fit_shape`) where the two agree.
3. Selection: the reading whose shape agrees best with its hull, unless one about as good finds much
   more; the quality is that agreement, lowered where the evidence fills little of the hull.

:func:`match_evidence` makes the same readings and picks, per area, the one closest to a given mask
(a trained network's): the network says which part of the screen is the region, the evidence where
its edges are.

:func:`fit_shape` fits the shape to a clean mask (a network's prediction, blurry from its low
resolution): candidates for each component (the sides by RANSAC lines through the row extents, apex
= their intersection, far arc by a robust circle fit, top pointed, flat or curved, vertical clips; a
rectangle from robust extents; a dual view split at a valley in the column profile), the candidate
with the fewest disagreeing pixels plus a penalty per parameter, then a sub-pixel polish by
``scipy.optimize.least_squares``; given the loop, it also uses the loop's region boxes
(:mod:`.boxfit`) where the image has faded to black.
"""

from UltrasoundRefineLib.automask.fanfit.shapefit import ShapeFit, fit_shape
from UltrasoundRefineLib.automask.fanfit.suggest import METHOD, match_evidence, suggest_fanfit

__all__ = ["METHOD", "ShapeFit", "fit_shape", "match_evidence", "suggest_fanfit"]
