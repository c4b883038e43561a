"""numpy/Loop <-> MRML nodes: volumes, sequences of volume frames, segmentations.

The only place in the library that talks to Slicer. ``slicer`` (and ``vtk``) are imported inside the
functions, so importing this module costs nothing outside Slicer. Every function takes the MRML
``scene`` as a parameter; ``None`` means ``slicer.mrmlScene`` (resolved when called). That is what lets
the same code run inside Slicer and in plain pytest against ``slicer-core``'s real MRML classes, where
there is no application scene and no ``slicer.modules``.

Geometry. Slicer volume arrays are ``(K, J, I)`` = (slices, rows, columns); a 2D ultrasound frame is a
single-slice volume ``(1, H, W)`` (``(1, H, W, 3)`` for colour, as a vector volume). A :class:`Loop`
describes its grid the way SimpleITK does (LPS, ``origin`` in (x, y), ``direction`` a row-major 2x2,
``spacing`` as ``(row_mm, col_mm)``); MRML uses RAS, so x and y change sign on the way in and out, the
same flip Slicer applies when it loads a PNG or an ultrasound DICOM (IJK-to-RAS ``diag(-1, -1, 1)``).
Round trips Loop -> node(s) -> Loop are exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from UltrasoundRefineLib.loop import Loop

#: Node attribute: "1" when the loop's pixel spacing was known, "0" when it was made up as 1 mm.
ATTR_SPACING_KNOWN = "UltrasoundRefine.SpacingKnown"
#: Node attribute: the loop's frame time in ms (``repr`` of a float), exact where index values round.
ATTR_FRAME_TIME_MS = "UltrasoundRefine.FrameTimeMs"
#: Default name of the segment that holds the ultrasound image region.
REGION_SEGMENT_NAME = "ImageRegion"
REGION_SEGMENT_COLOR = (0.95, 0.75, 0.2)


# --------------------------------------------------------------------------------------------- scene


def _scene(scene=None):
    """The scene to work in: the one given, else Slicer's application scene."""
    if scene is not None:
        return scene
    import slicer

    app_scene = getattr(slicer, "mrmlScene", None)
    if app_scene is None:
        raise RuntimeError(
            "no MRML scene: outside the Slicer application pass scene=slicer.vtkMRMLScene() explicitly"
        )
    return app_scene


def ensure_node_classes(scene=None):
    """Register the node classes this bridge creates, where the scene does not know them yet.

    The Slicer application registers them at startup; a bare ``vtkMRMLScene`` (slicer-core) does not
    know the sequence browser node. Returns the scene.
    """
    import slicer

    scene = _scene(scene)
    for class_name in ("vtkMRMLSequenceNode", "vtkMRMLSequenceBrowserNode", "vtkMRMLSegmentationNode"):
        if scene.CreateNodeByClass(class_name) is None:
            scene.RegisterNodeClass(getattr(slicer, class_name)())
    return scene


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> surface converter rules where nobody has (the Segmentations module
    does it at Slicer startup; slicer-core leaves the factory empty, and a segmentation then cannot
    even hold a binary labelmap)."""
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    have = {type(r).__name__ for r in _converter_rules(factory)}
    for rule_class in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        if rule_class not in have and hasattr(slicer, rule_class):
            factory.RegisterConverterRule(getattr(slicer, rule_class)())


def _converter_rules(factory) -> list:
    rules = factory.GetConverterRules()
    try:
        return list(rules)
    except TypeError:  # older wrappings return a vtkCollection-like object
        return [rules.GetItemAsObject(i) for i in range(rules.GetNumberOfItems())]


def _sequences_logic(scene):
    """The Sequences module logic for ``scene``: the application's when it runs on its scene, else a
    fresh one bound to ``scene`` (the caller detaches it with ``SetMRMLScene(None)``)."""
    import slicer

    modules = getattr(slicer, "modules", None)
    if modules is not None and scene is getattr(slicer, "mrmlScene", None) and hasattr(modules, "sequences"):
        return modules.sequences.logic(), False
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    return logic, True


# ------------------------------------------------------------------------------------------ geometry


def _ijk_to_ras(loop: Loop):
    """The 4x4 IJK-to-RAS matrix (``vtkMatrix4x4``) of a loop's frame grid."""
    import vtk

    row_mm, col_mm = loop.spacing if loop.spacing is not None else (1.0, 1.0)
    d00, d01, d10, d11 = (float(v) for v in loop.direction)
    # LPS -> RAS flips x and y; columns of the direction matrix are the I and J axes
    lps_dir = np.array([[d00, d01, 0.0], [d10, d11, 0.0], [0.0, 0.0, 1.0]])
    ras_dir = np.diag([-1.0, -1.0, 1.0]) @ lps_dir
    scaled = ras_dir @ np.diag([float(col_mm), float(row_mm), 1.0])
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, float(scaled[r, c]))
    m.SetElement(0, 3, -float(loop.origin[0]))
    m.SetElement(1, 3, -float(loop.origin[1]))
    m.SetElement(2, 3, 0.0)
    return m


def _apply_geometry(node, loop: Loop) -> None:
    """Set spacing, origin and directions of a volume node from the loop, without rounding."""
    import vtk

    row_mm, col_mm = loop.spacing if loop.spacing is not None else (1.0, 1.0)
    d00, d01, d10, d11 = (float(v) for v in loop.direction)
    directions = vtk.vtkMatrix4x4()
    # column 0 = I axis (columns of the image), column 1 = J axis (rows); RAS = diag(-1,-1,1) * LPS
    directions.SetElement(0, 0, -d00)
    directions.SetElement(1, 0, -d10)
    directions.SetElement(0, 1, -d01)
    directions.SetElement(1, 1, -d11)
    node.SetIJKToRASDirectionMatrix(directions)
    node.SetSpacing(float(col_mm), float(row_mm), 1.0)
    node.SetOrigin(-float(loop.origin[0]), -float(loop.origin[1]), 0.0)
    node.SetAttribute(ATTR_SPACING_KNOWN, "1" if loop.spacing is not None else "0")


def _geometry_from_node(node) -> dict:
    """Loop geometry fields (spacing, origin, direction) from a volume node's IJK-to-RAS."""
    import vtk

    sx, sy, _ = node.GetSpacing()
    ox, oy, _ = node.GetOrigin()
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(m)
    direction = (-m.GetElement(0, 0), -m.GetElement(0, 1), -m.GetElement(1, 0), -m.GetElement(1, 1))
    known = node.GetAttribute(ATTR_SPACING_KNOWN)
    spacing = None if known == "0" else (float(sy), float(sx))
    return {
        "spacing": spacing,
        "origin": (-float(ox) + 0.0, -float(oy) + 0.0),
        "direction": tuple(float(v) + 0.0 for v in direction),
    }


# ---------------------------------------------------------------------------------------- pixel data


def _is_volume(node) -> bool:
    return node is not None and node.IsA("vtkMRMLVolumeNode")


def volume_array(volume_node) -> np.ndarray:
    """A copy of the voxels: ``(K, J, I)`` scalar or ``(K, J, I, C)`` vector."""
    import slicer.util

    if volume_node.GetImageData() is None:
        raise ValueError(f"volume {volume_node.GetName()!r} has no image data")
    return np.array(slicer.util.arrayFromVolume(volume_node), copy=True)


def set_volume_array(volume_node, array: np.ndarray) -> None:
    """Replace the voxels of a volume node with ``array`` (``(K,J,I)`` or ``(K,J,I,C)``), deep-copied.

    2D input is taken as one slice; we never hand 2D arrays to ``updateVolumeFromArray`` because it
    widens them to float64.
    """
    import slicer.util

    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        array = array[None]
    slicer.util.updateVolumeFromArray(volume_node, array)


def _pixels(volume_node) -> np.ndarray:
    """``(K, H, W)`` grey or ``(K, H, W, 3)`` colour voxels of one volume node, in their own dtype."""
    arr = volume_array(volume_node)
    if arr.ndim == 4:
        channels = arr.shape[-1]
        if channels == 1:
            arr = arr[..., 0]
        elif channels in (3, 4):
            arr = arr[..., :3]  # drop alpha
        else:
            raise ValueError(
                f"volume {volume_node.GetName()!r} has {channels} components per voxel; "
                "expected grey (1) or colour (3/4)"
            )
    return arr


def _to_frames(arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """uint8 frames the way the file readers make them (one mapping for the whole loop), and the meta
    entries saying what was done."""
    from UltrasoundRefineLib.io.images import to_uint8

    return to_uint8(arr, colour=arr.ndim == 4)


# ------------------------------------------------------------------------------------- volume <-> Loop


def loop_from_volume(volume_node, stem: str | None = None) -> Loop:
    """A Loop from a scalar or vector volume node.

    A single-slice volume is one frame; a volume with K > 1 slices is taken as K frames (how a
    multi-frame image loaded as a plain volume looks). Deeper than 8-bit data is brought to uint8 the
    way the file readers do it (see ``io.images.to_uint8``) and ``meta`` says so.
    """
    if not _is_volume(volume_node):
        raise TypeError(f"expected a volume node, got {volume_node.GetClassName() if volume_node else None}")
    frames, info = _to_frames(_pixels(volume_node))
    meta = {"source": "slicer", "node_class": volume_node.GetClassName(), **info}
    return Loop(frames=frames, stem=stem or volume_node.GetName() or "loop", meta=meta, **_geometry_from_node(volume_node))


def _new_frame_volume(loop: Loop):
    import slicer

    node = slicer.vtkMRMLVectorVolumeNode() if loop.is_rgb else slicer.vtkMRMLScalarVolumeNode()
    if loop.is_rgb:
        node.SetVoxelVectorType(slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGB)
    _apply_geometry(node, loop)
    return node


def _set_frame(node, frame: np.ndarray) -> None:
    """Give ``node`` its own image data holding one frame (a fresh vtkImageData, never shared)."""
    import vtk

    node.SetAndObserveImageData(vtk.vtkImageData())
    set_volume_array(node, frame[None])


def loop_to_volume(loop: Loop, frame_index: int = 0, scene=None, name: str | None = None):
    """One frame of a loop as a new volume node in the scene (scalar, or vector for RGB)."""
    scene = _scene(scene)
    if not 0 <= frame_index < loop.n_frames:
        raise IndexError(f"frame {frame_index} out of range for a loop of {loop.n_frames} frames")
    node = _new_frame_volume(loop)
    node.SetName(scene.GenerateUniqueName(name or loop.stem))
    _set_frame(node, loop.frames[frame_index])
    scene.AddNode(node)
    _add_default_display(node)
    return node


def _add_default_display(node) -> None:
    """Display nodes (Slicer needs one to show the volume); harmless where the scene cannot make one."""
    try:
        node.CreateDefaultDisplayNodes()
    except Exception:  # noqa: BLE001 - slicer-core without a colour logic; display is not our concern
        pass


# ----------------------------------------------------------------------------------- sequence <-> Loop


def loop_from_sequence(sequence_node, stem: str | None = None) -> Loop:
    """A Loop from a sequence node of single-slice volume frames, in sequence order.

    Spacing and orientation come from the first frame; every frame must have the same size.
    The frame time comes from our attribute when we wrote the sequence, else from numeric time
    index values in seconds (as Slicer's DICOM image sequence plugin writes them).
    """
    n = sequence_node.GetNumberOfDataNodes()
    if n == 0:
        raise ValueError(f"sequence {sequence_node.GetName()!r} has no frames")
    frames = []
    first = None
    for i in range(n):
        node = sequence_node.GetNthDataNode(i)
        if not _is_volume(node):
            raise TypeError(
                f"sequence {sequence_node.GetName()!r} item {i} is a "
                f"{node.GetClassName() if node else None}, not a volume"
            )
        f = _pixels(node)
        if f.shape[0] != 1:
            raise ValueError(
                f"sequence {sequence_node.GetName()!r} item {i} has {f.shape[0]} slices; expected 2D frames"
            )
        if first is None:
            first = node
        elif f.shape[1:] != frames[0].shape:
            raise ValueError(
                f"sequence {sequence_node.GetName()!r} item {i} is {f.shape[1:]}, item 0 is {frames[0].shape}"
            )
        frames.append(f[0])
    pixels, info = _to_frames(np.stack(frames))
    meta = {"source": "slicer", "node_class": "vtkMRMLSequenceNode", **info}
    return Loop(
        frames=pixels,
        frame_time_ms=_frame_time_ms(sequence_node),
        stem=stem or sequence_node.GetName() or "loop",
        meta=meta,
        **_geometry_from_node(first),
    )


def _frame_time_ms(sequence_node) -> float | None:
    attr = sequence_node.GetAttribute(ATTR_FRAME_TIME_MS)
    if attr:
        return float(attr)
    if sequence_node.GetNumberOfDataNodes() < 2 or sequence_node.GetIndexUnit() != "s":
        return None
    try:
        t0 = float(sequence_node.GetNthIndexValue(0))
        t1 = float(sequence_node.GetNthIndexValue(1))
    except ValueError:
        return None
    return (t1 - t0) * 1000.0 if t1 > t0 else None


def loop_to_sequence(loop: Loop, scene=None, name: str | None = None):
    """A loop as a sequence node of volume frames plus a browser that plays it.

    Returns ``(sequence_node, browser_node, proxy_volume_node)``; the proxy is the volume the views
    show and the one to pass as the reference volume of a segmentation.
    """
    import slicer

    scene = ensure_node_classes(scene)
    name = name or loop.stem
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", scene.GenerateUniqueName(name))
    if loop.frame_time_ms:
        seq.SetIndexName("time")
        seq.SetIndexUnit("s")
        seq.SetAttribute(ATTR_FRAME_TIME_MS, repr(float(loop.frame_time_ms)))
        index_values = [f"{i * loop.frame_time_ms / 1000.0:.3f}" for i in range(loop.n_frames)]
        if len(set(index_values)) < loop.n_frames:  # sub-millisecond frames: fall back to more digits
            index_values = [repr(i * loop.frame_time_ms / 1000.0) for i in range(loop.n_frames)]
    else:
        seq.SetIndexName("frame")
        seq.SetIndexUnit("")
        index_values = [str(i) for i in range(loop.n_frames)]
    seq.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    frame_node = _new_frame_volume(loop)
    frame_node.SetName(name)
    for i, value in enumerate(index_values):
        _set_frame(frame_node, loop.frames[i])  # fresh image data each time: the sequence keeps copies
        seq.SetDataNodeAtValue(frame_node, value)

    browser, proxy = _browse(seq, scene, 1000.0 / loop.frame_time_ms if loop.frame_time_ms else 10.0)
    return seq, browser, proxy


def _browse(seq, scene, fps: float = 10.0):
    """A new browser playing ``seq``, and its proxy volume."""
    browser = scene.AddNewNodeByClass(
        "vtkMRMLSequenceBrowserNode", scene.GenerateUniqueName(f"{seq.GetName()} browser")
    )
    browser.SetPlaybackRateFps(fps)
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    proxy = browser.GetProxyNode(seq)
    if proxy is None:
        # the application's Sequences logic makes proxies when it sees the browser; a bare scene has none
        logic, detach = _sequences_logic(scene)
        try:
            logic.UpdateProxyNodesFromSequences(browser)
        finally:
            if detach:
                logic.SetMRMLScene(None)
        proxy = browser.GetProxyNode(seq)
    if proxy is not None:
        _add_default_display(proxy)
    return browser, proxy


def reference_volume(node, scene=None):
    """The volume whose pixel grid a mask of ``node`` lives on: the volume itself, or for a sequence
    the proxy volume of a browser that plays it (a browser is made when there is none)."""
    scene = ensure_node_classes(scene)
    if _is_volume(node):
        return node
    if node is None or not node.IsA("vtkMRMLSequenceNode"):
        raise TypeError(f"expected a volume or a sequence node, got {node.GetClassName() if node else None}")
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    try:
        for i in range(browsers.GetNumberOfItems()):
            proxy = browsers.GetItemAsObject(i).GetProxyNode(node)
            if _is_volume(proxy):
                return proxy
    finally:
        browsers.UnRegister(None)
    _, proxy = _browse(node, scene)
    if not _is_volume(proxy):
        raise ValueError(f"sequence {node.GetName()!r} does not hold volumes")
    return proxy


def sequence_for_volume(volume_node, scene=None):
    """The sequence whose proxy is ``volume_node`` (a frame shown by a sequence browser), else None.

    Inside Slicer this is what ``slicer.modules.sequences.logic().GetFirstBrowserNodeForProxyNode``
    answers; we ask the browser nodes directly so it also works in a bare scene.
    """
    scene = _scene(scene)
    node_id = volume_node.GetID()
    if not node_id:
        return None
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    try:
        for i in range(browsers.GetNumberOfItems()):
            browser = browsers.GetItemAsObject(i)
            if browser.IsProxyNodeID(node_id):
                seq = browser.GetSequenceNode(volume_node)
                if seq is not None:
                    return seq
    finally:
        browsers.UnRegister(None)
    return None


def loop_from_node(node, scene=None, stem: str | None = None) -> Loop:
    """A Loop from whatever the user picked: a sequence, a volume shown by a sequence browser (the
    whole loop), or a plain volume."""
    if node is None:
        raise ValueError("no node selected")
    if node.IsA("vtkMRMLSequenceNode"):
        return loop_from_sequence(node, stem=stem)
    if _is_volume(node):
        seq = sequence_for_volume(node, scene)
        if seq is not None:
            return loop_from_sequence(seq, stem=stem or node.GetName())
        return loop_from_volume(node, stem=stem)
    raise TypeError(f"cannot make a loop from a {node.GetClassName()}")


# ------------------------------------------------------------------------------- mask <-> segmentation


def _temporary_labelmap(reference_volume, scene):
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__UltrasoundRefine_temp__")
    labelmap.CopyOrientation(reference_volume)
    return labelmap


def _remove_temporary(node, scene) -> None:
    """Remove a temporary labelmap, and the colour table that exporting a segment made for it (as
    ``slicer.util.arrayFromSegmentBinaryLabelmap`` does); shared (singleton) colour tables stay."""
    display = node.GetDisplayNode()
    color = display.GetColorNode() if display is not None else None
    remove_node(node, scene=scene)
    if color is not None and not color.GetSingletonTag() and scene.IsNodePresent(color):
        scene.RemoveNode(color)


def remove_node(node, scene=None) -> None:
    """Remove a node and its display and storage nodes (a bare MRML scene leaves those behind)."""
    scene = _scene(scene)
    if node is None or not scene.IsNodePresent(node):
        return
    helpers = []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and scene.IsNodePresent(helper):
            scene.RemoveNode(helper)


def _frame_grid(reference_volume) -> tuple[int, int, int]:
    image = reference_volume.GetImageData()
    if image is None:
        raise ValueError(f"reference volume {reference_volume.GetName()!r} has no image data")
    i, j, k = image.GetDimensions()
    return k, j, i


def mask_to_segmentation(
    mask: np.ndarray,
    reference_volume,
    segmentation_node=None,
    segment_name: str = REGION_SEGMENT_NAME,
    color: tuple[float, float, float] = REGION_SEGMENT_COLOR,
    scene=None,
):
    """Put an ``(H, W)`` mask into a segment over ``reference_volume``; returns ``(segmentation, segment_id)``.

    Creates the segmentation node when none is given and the segment when the node has none of that
    name; otherwise replaces the segment's content. For a volume of K > 1 slices the mask is the
    same on every slice (the region does not move within a loop).
    """
    import slicer
    import vtk

    scene = ensure_node_classes(scene)
    ensure_segmentation_converters()
    mask = np.asarray(mask)
    k, h, w = _frame_grid(reference_volume)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape != (h, w):
        raise ValueError(f"mask is {mask.shape}, volume {reference_volume.GetName()!r} frames are {(h, w)}")

    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{reference_volume.GetName()} region")
        )
        try:
            segmentation_node.CreateDefaultDisplayNodes()
        except Exception:  # noqa: BLE001 - no display in a bare scene
            pass
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        segment_id = segmentation.AddEmptySegment("", segment_name, list(color))

    labelmap = _temporary_labelmap(reference_volume, scene)
    try:
        set_volume_array(labelmap, np.broadcast_to(mask.astype(bool), (k, h, w)).astype(np.uint8))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmap, segmentation_node, ids
        ):
            raise RuntimeError(f"importing the mask into segment {segment_name!r} failed")
    finally:
        _remove_temporary(labelmap, scene)
    return segmentation_node, segment_id


def segmentation_to_mask(
    segmentation_node, reference_volume, segment_id: str | None = None, scene=None
) -> np.ndarray:
    """The ``(H, W)`` bool mask of one segment, on the reference volume's pixel grid.

    ``segment_id`` defaults to the segment named :data:`REGION_SEGMENT_NAME`, else the first segment.
    For a volume of K > 1 slices the union over slices is returned.
    """
    import slicer

    scene = ensure_node_classes(scene)
    ensure_segmentation_converters()
    segmentation = segmentation_node.GetSegmentation()
    if segment_id is None:
        segment_id = segmentation.GetSegmentIdBySegmentName(REGION_SEGMENT_NAME) or (
            segmentation.GetNthSegmentID(0) if segmentation.GetNumberOfSegments() else ""
        )
    if not segment_id or segmentation.GetSegment(segment_id) is None:
        raise ValueError(f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}")
    k, h, w = _frame_grid(reference_volume)
    labelmap = _temporary_labelmap(reference_volume, scene)
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, [segment_id], labelmap, reference_volume
        ):
            raise RuntimeError(f"exporting segment {segment_id!r} failed")
        if labelmap.GetImageData() is None:
            return np.zeros((h, w), dtype=bool)
        arr = volume_array(labelmap)
    finally:
        _remove_temporary(labelmap, scene)
    if arr.shape != (k, h, w):
        raise RuntimeError(f"exported segment is {arr.shape}, expected {(k, h, w)}")
    return np.any(arr > 0, axis=0)


# ------------------------------------------------------------------------------------------ suggestion

#: Segmentation node attributes: the auto-mask method and its quality (0..1) of the mask shown.
ATTR_METHOD = "UltrasoundRefine.Method"
ATTR_QUALITY = "UltrasoundRefine.Quality"


def suggestion_to_segmentation(suggestion, reference_volume, segmentation_node=None, scene=None):
    """Show a :class:`~UltrasoundRefineLib.automask.MaskSuggestion` as the region segment over
    ``reference_volume``; returns the segmentation node.

    ``segmentation_node`` (the last suggestion's) is reused only when it was made for the same volume:
    a suggestion for another loop gets its own node and the earlier one is kept. The method and the
    quality are kept as node attributes (:data:`ATTR_METHOD`, :data:`ATTR_QUALITY`)."""
    if segmentation_node is not None:
        role = segmentation_node.GetReferenceImageGeometryReferenceRole()
        if segmentation_node.GetNodeReference(role) is not reference_volume:
            segmentation_node = None
    segmentation_node, _segment_id = mask_to_segmentation(
        suggestion.mask, reference_volume, segmentation_node=segmentation_node, scene=scene
    )
    segmentation_node.SetAttribute(ATTR_METHOD, suggestion.method)
    segmentation_node.SetAttribute(ATTR_QUALITY, f"{suggestion.quality:.4f}")
    return segmentation_node


def start_suggest_mask(node, method: str = "fanfit", scene=None):
    """Read the loop of ``node`` (a volume or a sequence) here, on the GUI thread (MRML), and auto-mask
    it in a background thread, which touches neither Qt nor MRML (fanfit takes seconds on a long loop).
    Returns the :class:`~UltrasoundRefineLib.background.BackgroundCall` whose result (a MaskSuggestion)
    :func:`apply_suggestion` shows."""
    from UltrasoundRefineLib.automask import suggest_mask
    from UltrasoundRefineLib.background import BackgroundCall

    if node is None:
        raise ValueError("Select a volume or a sequence first.")
    loop = loop_from_node(node, scene=scene)
    return BackgroundCall(suggest_mask, loop, method, name="UltrasoundRefine-suggest-mask")


def apply_suggestion(node, suggestion, segmentation_node=None, scene=None):
    """Show a suggestion for ``node`` as the region segment over it (the last one's
    ``segmentation_node`` is reused for the same loop); returns the segmentation node. Refused when
    the loop left the scene while its mask was being made."""
    scene = _scene(scene)
    if node is None or not scene.IsNodePresent(node):
        raise ValueError("The loop was removed from the scene while its mask was being suggested.")
    if segmentation_node is not None and not scene.IsNodePresent(segmentation_node):
        segmentation_node = None
    return suggestion_to_segmentation(suggestion, reference_volume(node, scene=scene), segmentation_node, scene=scene)


class MaskInProgress:
    """A mask being suggested for a loop ``node`` (:func:`start_suggest_mask`: read now, auto-masked in a
    background thread) until :meth:`show` puts it in the scene; the panel polls :meth:`done` meanwhile
    and shows :attr:`status`."""

    def __init__(self, node, method: str = "fanfit", scene=None):
        self.node, self.method, self.scene = node, method, scene
        self.call = start_suggest_mask(node, method, scene=scene)
        self.status = f"Suggesting a mask with {method} in the background..."

    def done(self) -> bool:
        return self.call.done()

    def show(self, segmentation_node=None):
        """Wait for the mask and show it over its loop (:func:`apply_suggestion`); returns
        ``(segmentation_node, MaskSuggestion)``, or raises what the auto-mask raised. :attr:`status`
        then says how far to trust it."""
        suggestion = self.call.result()
        shown = apply_suggestion(self.node, suggestion, segmentation_node, scene=self.scene)
        self.status = f"{suggestion.method}: quality {suggestion.quality:.2f} (1 = trust it, 0 = check it)"
        return shown, suggestion


def suggest_mask_for_node(node, method: str = "fanfit", segmentation_node=None, scene=None):
    """:class:`MaskInProgress` in one blocking call (Python console, self-test); returns
    ``(segmentation_node, MaskSuggestion)``."""
    return MaskInProgress(node, method, scene=scene).show(segmentation_node)


def application_folders() -> tuple[str, str]:
    """``(Slicer's installation folder, its temporary folder)``; outside the application (slicer-core,
    plain Python) ``("", the system's temporary folder)``."""
    import tempfile

    import slicer

    app = getattr(slicer, "app", None)
    if app is None:
        return "", tempfile.gettempdir()
    return str(getattr(app, "slicerHome", "") or ""), str(app.temporaryPath)


def first_loop_node(scene=None):
    """The loop the panel offers when none is chosen: the scene's first sequence, else its first scalar
    volume (None in an empty scene)."""
    scene = _scene(scene)
    return scene.GetFirstNodeByClass("vtkMRMLSequenceNode") or scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")


# -------------------------------------------------------------------------------------------- review


class ReviewNodes:
    """The MRML side of the one review suggestion on screen: its loop (a volume, or a sequence with a
    browser), its mask as an outlined segment, and observers that notice when the reviewer's nodes go.

    ``on_gone()`` is called when a scene close or a user's deletion removes one of them (the review then
    has nothing on screen: no decision can be recorded for what is not seen); ``on_edited()`` when the
    segment is changed (a Segment Editor stroke). Our own removals (:meth:`clear`) call neither.
    """

    def __init__(self, scene=None, on_gone=None, on_edited=None):
        self.scene = _scene(scene)
        self.on_gone = on_gone
        self.on_edited = on_edited
        self.nodes: list = []
        self.volume = None
        self.segmentation = None
        self.browser = None
        self._observations: list = []  # (object, observer tag)

    @property
    def shown(self) -> bool:
        return self.volume is not None and self.segmentation is not None

    def show(self, loop: Loop, mask: np.ndarray, name: str | None = None):
        """Replace what is shown by ``loop`` and ``mask``; returns ``(volume, segmentation)``.

        Nothing is left in the scene when this fails part way (a mask that does not fit the loop)."""
        self.clear()
        try:
            if loop.n_frames > 1:
                sequence, self.browser, volume = loop_to_sequence(loop, scene=self.scene, name=name)
                self.nodes += [self.browser, sequence, volume]
            else:
                volume = loop_to_volume(loop, scene=self.scene, name=name)
                self.nodes.append(volume)
            segmentation, _segment_id = mask_to_segmentation(mask, volume, scene=self.scene)
            self.nodes.append(segmentation)
        except Exception:
            self.clear()
            raise
        self.volume, self.segmentation = volume, segmentation
        display = segmentation.GetDisplayNode()
        if display is not None:  # the outline only: a filled overlay hides the fan's edge being judged
            display.SetVisibility2DFill(False)
            display.SetVisibility2DOutline(True)
        self._observe()
        return volume, segmentation

    def mask(self) -> np.ndarray:
        """The ``(H, W)`` mask of the segment as it is now (after Segment Editor work)."""
        if not self.shown:
            raise ValueError("no suggestion is on screen")
        return segmentation_to_mask(self.segmentation, self.volume, scene=self.scene)

    def set_mask(self, mask: np.ndarray) -> None:
        """Put ``mask`` back into the segment shown (an edit discarded)."""
        if self.shown:
            mask_to_segmentation(mask, self.volume, segmentation_node=self.segmentation, scene=self.scene)

    def clear(self) -> None:
        """Remove what was shown from the scene."""
        nodes = self.nodes
        self.forget()  # our own removals are not a user's deletion
        for node in nodes:
            if self.scene.IsNodePresent(node):
                remove_node(node, scene=self.scene)

    def forget(self) -> None:
        """Stop observing and hold no node any more (they are gone, or are being removed)."""
        for obj, tag in self._observations:
            obj.RemoveObserver(tag)
        self._observations = []
        self.nodes = []
        self.volume = self.segmentation = self.browser = None

    def _observe(self) -> None:
        import slicer
        import vtk

        scene = self.scene

        def on_node_removed(caller, event, node):
            if any(node is n for n in self.nodes):
                # the rest stay ours (clear() removes them) but nothing is on screen any more
                rest = [n for n in self.nodes if n is not node]
                self.forget()
                self.nodes = rest
                if self.on_gone is not None:
                    self.on_gone()

        on_node_removed.CallDataType = vtk.VTK_OBJECT

        def on_close(caller, event):
            self.forget()
            if self.on_gone is not None:
                self.on_gone()

        def on_edited(caller, event):
            if self.on_edited is not None:
                self.on_edited()

        self._observations = [
            (scene, scene.AddObserver(scene.NodeRemovedEvent, on_node_removed)),
            (scene, scene.AddObserver(scene.StartCloseEvent, on_close)),
        ]
        # the Segment Editor's strokes modify the segment's source (formerly "master") representation
        for name in ("SourceRepresentationModified", "MasterRepresentationModified", "SegmentModified"):
            event = getattr(slicer.vtkSegmentation, name, None)
            if event is not None:
                self._observations.append((self.segmentation, self.segmentation.AddObserver(event, on_edited)))


def open_review(path, round=None, scene=None, on_changed=None):
    """A workspace's review (:class:`~UltrasoundRefineLib.reviewsession.ReviewDesk`) shown in ``scene``
    through :class:`ReviewNodes`: a removed review node or a closed scene takes the suggestion off
    screen, and ``on_changed()`` is called then and after each edit of the mask."""
    from UltrasoundRefineLib.reviewsession import ReviewDesk

    def changed():
        if on_changed is not None:
            on_changed()

    desk = ReviewDesk(str(path or ""), round)
    desk.display = ReviewNodes(scene, on_gone=desk.offScreen, on_edited=changed)
    desk.onChanged = changed
    return desk


# ---------------------------------------------------------------------- Sample Data: the phantom loop

#: Sample Data category and name of the built-in phantom (also the sequence's node name).
SAMPLE_CATEGORY = "Ultrasound"
SAMPLE_PHANTOM_NAME = "UltrasoundRefinePhantom"
#: Which phantom loop: index 0 of ``ultrasound-refine phantom --seed 2304`` (the same file every time).
SAMPLE_PHANTOM_SEED = 2304


def sample_phantom_folder() -> Path:
    """Where the sample phantom is written: a folder of its own under the system's temporary folder."""
    import tempfile

    return Path(tempfile.gettempdir()) / "UltrasoundRefine-sample"


def write_sample_phantom(folder=None) -> Path:
    """Write the sample phantom loop (US Multi-frame DICOM, synthetic, no PHI) and return its path.

    Generated here rather than downloaded: Sample Data must work offline, and the phantom is the data
    the library's method and tests already use. Under Slicer 5.10's pydicom 2.4.4 (until the module's
    pydicom 3 install and a restart) it says so rather than writing a file nothing here could read."""
    from UltrasoundRefineLib.errors import OutputError
    from UltrasoundRefineLib.io.dicom import PYDICOM_PROBLEM

    folder = sample_phantom_folder() if folder is None else folder
    if PYDICOM_PROBLEM:
        raise OutputError(folder, f"cannot write the sample phantom: {PYDICOM_PROBLEM}")
    from UltrasoundRefineLib.phantom.dicom import write_phantom_set

    return write_phantom_set(folder, 1, SAMPLE_PHANTOM_SEED)[0]


def load_sample_phantom(source=None, folder=None, scene=None):
    """Sample Data's ``customDownloader``: write the phantom DICOM and load it as a playing sequence.

    ``source`` is the ``SampleDataSource`` that Sample Data passes (unused: there is one phantom).
    The file goes through the library's reader (``read_loop``), the same path as any loop the user
    opens. Returns the proxy volume node the views show."""
    from UltrasoundRefineLib.io import read_loop

    loop = read_loop(write_sample_phantom(folder))
    _seq, _browser, proxy = loop_to_sequence(loop, scene=scene, name=SAMPLE_PHANTOM_NAME)
    return proxy


def register_sample_phantom(thumbnail_file: str | None = None) -> None:
    """Put the phantom loop in Slicer's Sample Data module (call it once the application has started,
    as the module template does: Sample Data is not there before)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_phantom_source(thumbnail_file))


def sample_phantom_source(thumbnail_file: str | None = None) -> dict:
    """Keyword arguments for ``SampleData.SampleDataLogic.registerCustomSampleDataSource``: nothing to
    download (no URI, no checksum); the button calls :func:`load_sample_phantom` instead."""
    return dict(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_PHANTOM_NAME,
        thumbnailFileName=thumbnail_file,
        uris=None,
        fileNames=f"{SAMPLE_PHANTOM_NAME}.dcm",
        nodeNames=SAMPLE_PHANTOM_NAME,
        customDownloader=load_sample_phantom,
    )
