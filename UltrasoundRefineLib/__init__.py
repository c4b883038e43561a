"""UltrasoundRefine: find the ultrasound image region in every loop, cheaply and accurately.

Pure Python library; never imports slicer, qt, ctk or vtk at module level (see ``slicerbridge``).
"""

__version__ = "0.1.0"
