"""The numpy/Loop <-> MRML bridge against Slicer's real MRML classes (PyPI ``slicer-core``).

No Slicer application: a bare ``vtkMRMLScene`` per test, which is exactly what the bridge's
``scene=`` parameter is for. Skipped, with the reason, where slicer-core is not installed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from UltrasoundRefineLib.loop import Loop

slicer = pytest.importorskip("slicer", reason="slicer-core (PyPI) is not installed: pip install slicer-core")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' package has no MRML classes (slicer-core missing or broken)", allow_module_level=True)

from UltrasoundRefineLib import slicerbridge as sb  # noqa: E402


@pytest.fixture
def scene():
    s = slicer.vtkMRMLScene()
    yield s
    s.Clear(True)


def _grey_loop(n=4, h=24, w=32, seed=0, **kw) -> Loop:
    rng = np.random.default_rng(seed)
    return Loop(frames=rng.integers(0, 256, (n, h, w), dtype=np.uint8), **kw)


def _assert_same_loop(a: Loop, b: Loop) -> None:
    assert a.frames.dtype == b.frames.dtype == np.uint8
    assert a.frames.shape == b.frames.shape
    assert np.array_equal(a.frames, b.frames)
    assert a.spacing == b.spacing
    assert a.origin == b.origin
    assert a.direction == b.direction


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


# ------------------------------------------------------------------------------------------ sequences


def test_grey_loop_sequence_round_trip_is_exact(scene):
    loop = _grey_loop(spacing=(0.31, 0.27), origin=(12.5, -3.25), frame_time_ms=33.3, stem="echo")
    seq, browser, proxy = sb.loop_to_sequence(loop, scene=scene)
    assert seq.GetNumberOfDataNodes() == loop.n_frames
    assert browser.GetMasterSequenceNode() is seq
    assert proxy is not None and proxy.GetClassName() == "vtkMRMLScalarVolumeNode"
    back = sb.loop_from_sequence(seq)
    _assert_same_loop(loop, back)
    assert back.frame_time_ms == pytest.approx(33.3, abs=0)
    assert back.stem == "echo"


def test_frames_keep_sequence_order_and_are_not_shared(scene):
    # every frame different and recognisable: a shared vtkImageData would repeat the last one
    frames = np.stack([np.full((8, 10), 10 * i, dtype=np.uint8) for i in range(6)])
    seq, _, _ = sb.loop_to_sequence(Loop(frames=frames), scene=scene)
    back = sb.loop_from_sequence(seq)
    assert [int(f[0, 0]) for f in back.frames] == [0, 10, 20, 30, 40, 50]


def test_rgb_loop_becomes_vector_volumes_and_comes_back(scene):
    rng = np.random.default_rng(1)
    loop = Loop(frames=rng.integers(0, 256, (3, 16, 20, 3), dtype=np.uint8), spacing=(0.5, 0.4))
    seq, _, proxy = sb.loop_to_sequence(loop, scene=scene)
    assert proxy.GetClassName() == "vtkMRMLVectorVolumeNode"
    assert sb.volume_array(seq.GetNthDataNode(0)).shape == (1, 16, 20, 3)
    _assert_same_loop(loop, sb.loop_from_sequence(seq))


def test_spacing_is_on_the_right_axes_and_orientation_matches_slicer_dicom(scene):
    loop = _grey_loop(n=1, h=10, w=30, spacing=(0.2, 0.7))
    _, _, proxy = sb.loop_to_sequence(loop, scene=scene)
    # (K, J, I) = (slices, rows, cols): I spacing is the column size
    assert proxy.GetSpacing() == pytest.approx((0.7, 0.2, 1.0))
    assert sb.volume_array(proxy).shape == (1, 10, 30)
    # identity LPS direction == Slicer's DICOM image sequence orientation diag(-1, -1, 1)
    assert np.allclose(_ijk_to_ras(proxy)[:3, :3], np.diag([-0.7, -0.2, 1.0]))


def test_unknown_spacing_stays_unknown(scene):
    loop = _grey_loop(spacing=None)
    seq, _, _ = sb.loop_to_sequence(loop, scene=scene)
    assert sb.loop_from_sequence(seq).spacing is None


def test_rotated_grid_round_trips(scene):
    loop = _grey_loop(spacing=(0.3, 0.6), origin=(-4.0, 7.5), direction=(0.0, -1.0, 1.0, 0.0))
    seq, _, _ = sb.loop_to_sequence(loop, scene=scene)
    _assert_same_loop(loop, sb.loop_from_sequence(seq))


def test_sequence_as_slicer_dicom_plugin_builds_it(scene):
    """Frames added the way DICOMImageSequencePlugin does: temp volume, IJKToRAS diag(-1,-1,1),
    spacing from the ultrasound region, time index in seconds with 3 decimals."""
    import vtk

    sb.ensure_node_classes(scene)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "US cine")
    seq.SetIndexName("time")
    seq.SetIndexUnit("s")
    temp = slicer.vtkMRMLScalarVolumeNode()
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 0, -1.0)
    m.SetElement(1, 1, -1.0)
    temp.SetIJKToRASMatrix(m)
    temp.SetSpacing(0.25, 0.35, 1.0)
    frames = np.stack([np.full((12, 14), v, dtype=np.uint8) for v in (5, 6, 7)])
    for i, f in enumerate(frames):
        temp.SetAndObserveImageData(vtk.vtkImageData())
        sb.set_volume_array(temp, f[None])
        seq.SetDataNodeAtValue(temp, f"{i * 0.04:.3f}")
    loop = sb.loop_from_sequence(seq)
    assert np.array_equal(loop.frames, frames)
    assert loop.spacing == pytest.approx((0.35, 0.25))
    assert loop.direction == (1.0, 0.0, 0.0, 1.0)
    assert loop.frame_time_ms == pytest.approx(40.0)
    assert loop.stem == "US cine"


def test_volume_shown_by_a_browser_gives_the_whole_loop(scene):
    loop = _grey_loop(n=5, spacing=(0.3, 0.3))
    _, _, proxy = sb.loop_to_sequence(loop, scene=scene)
    assert sb.sequence_for_volume(proxy, scene=scene) is not None
    back = sb.loop_from_node(proxy, scene=scene)
    assert back.n_frames == 5
    assert np.array_equal(back.frames, loop.frames)


def test_sequence_with_non_volume_items_is_refused(scene):
    sb.ensure_node_classes(scene)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "points")
    seq.SetDataNodeAtValue(slicer.vtkMRMLSegmentationNode(), "0")
    with pytest.raises(TypeError, match="not a volume"):
        sb.loop_from_sequence(seq)


# -------------------------------------------------------------------------------------------- volumes


def test_single_frame_volume_round_trip(scene):
    loop = _grey_loop(n=3, spacing=(0.1, 0.2), origin=(1.0, 2.0))
    node = sb.loop_to_volume(loop, frame_index=1, scene=scene)
    assert scene.GetNodeByID(node.GetID()) is node
    assert sb.sequence_for_volume(node, scene=scene) is None
    back = sb.loop_from_node(node, scene=scene)
    assert back.n_frames == 1
    assert np.array_equal(back.frames[0], loop.frames[1])
    assert (back.spacing, back.origin, back.direction) == (loop.spacing, loop.origin, loop.direction)


def test_multi_slice_volume_is_a_loop_of_its_slices(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "stack")
    stack = np.random.default_rng(2).integers(0, 256, (4, 9, 11), dtype=np.uint8)
    sb.set_volume_array(node, stack)
    back = sb.loop_from_volume(node)
    assert back.frames.shape == (4, 9, 11)
    assert np.array_equal(back.frames, stack)


def test_deep_volume_is_brought_to_uint8_and_says_so(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "deep")
    sb.set_volume_array(node, np.array([[[0, 500], [1000, 250]]], dtype=np.int16))
    back = sb.loop_from_volume(node)
    assert back.frames.dtype == np.uint8
    assert back.frames[0].tolist() == [[0, 128], [255, 64]]
    assert back.meta["rescaled_from_bits"] == 16


# ------------------------------------------------------------------------------------- segmentations


def _irregular_mask(h, w, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    fan = (xx - w / 2) ** 2 + (yy + 2) ** 2 < (0.8 * h) ** 2
    fan &= np.abs(xx - w / 2) < (yy + 1) * 0.9
    noise = rng.random((h, w)) < 0.05
    return fan ^ noise  # holes and islands: nothing a smooth shape would survive by luck


def test_mask_segmentation_round_trip_is_exact(scene):
    loop = _grey_loop(n=3, h=40, w=50, spacing=(0.3, 0.2), origin=(5.0, 5.0))
    _, _, proxy = sb.loop_to_sequence(loop, scene=scene)
    mask = _irregular_mask(40, 50)
    seg, segment_id = sb.mask_to_segmentation(mask, proxy, scene=scene)
    assert seg.GetSegmentation().GetSegment(segment_id).GetName() == sb.REGION_SEGMENT_NAME
    back = sb.segmentation_to_mask(seg, proxy, segment_id, scene=scene)
    assert back.dtype == bool and back.shape == (40, 50)
    assert np.array_equal(back, mask)
    # the temporary labelmaps are gone, with their display nodes
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeDisplayNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == 0


def test_writing_again_replaces_the_segment(scene):
    loop = _grey_loop(n=1, h=20, w=20)
    node = sb.loop_to_volume(loop, scene=scene)
    first = np.zeros((20, 20), bool)
    first[2:10, 2:10] = True
    second = np.zeros((20, 20), bool)
    second[12:18, 5:19] = True
    seg, sid = sb.mask_to_segmentation(first, node, scene=scene)
    seg2, sid2 = sb.mask_to_segmentation(second, node, segmentation_node=seg, scene=scene)
    assert (seg2, sid2) == (seg, sid)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert np.array_equal(sb.segmentation_to_mask(seg, node, scene=scene), second)


def test_empty_mask_round_trips(scene):
    node = sb.loop_to_volume(_grey_loop(n=1, h=12, w=16), scene=scene)
    seg, sid = sb.mask_to_segmentation(np.zeros((12, 16), bool), node, scene=scene)
    assert not sb.segmentation_to_mask(seg, node, sid, scene=scene).any()


def test_mask_on_a_multi_slice_volume_covers_every_slice(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "stack")
    sb.set_volume_array(node, np.zeros((3, 10, 12), dtype=np.uint8))
    mask = _irregular_mask(10, 12, seed=5)
    seg, sid = sb.mask_to_segmentation(mask, node, scene=scene)
    assert np.array_equal(sb.segmentation_to_mask(seg, node, sid, scene=scene), mask)


def test_mask_of_the_wrong_shape_is_refused(scene):
    node = sb.loop_to_volume(_grey_loop(n=1, h=12, w=16), scene=scene)
    with pytest.raises(ValueError, match=r"\(16, 12\)"):
        sb.mask_to_segmentation(np.zeros((16, 12), bool), node, scene=scene)


# ------------------------------------------------------------------------------------------- imports


def test_importing_the_bridge_does_not_import_slicer():
    code = "import sys, UltrasoundRefineLib.slicerbridge; print(sorted(m for m in ('slicer', 'vtk', 'qt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_a_scene_outside_slicer_the_error_says_what_to_do():
    if getattr(slicer, "mrmlScene", None) is not None:
        pytest.skip("running inside Slicer: there is an application scene")
    with pytest.raises(RuntimeError, match="scene="):
        sb.loop_to_volume(_grey_loop(n=1))


def test_reference_volume_of_a_sequence_is_its_proxy_and_a_browser_is_made_when_missing(scene):
    loop = _grey_loop(n=3, h=10, w=14)
    seq, _, proxy = sb.loop_to_sequence(loop, scene=scene)
    assert sb.reference_volume(seq, scene=scene) is proxy
    node = sb.loop_to_volume(loop, scene=scene)
    assert sb.reference_volume(node, scene=scene) is node
    # a sequence nobody browses yet
    bare = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "bare")
    for i in range(2):
        bare.SetDataNodeAtValue(seq.GetNthDataNode(i), str(i))
    ref = sb.reference_volume(bare, scene=scene)
    assert ref is not None and sb.volume_array(ref).shape == (1, 10, 14)
    assert sb.sequence_for_volume(ref, scene=scene) is bare


def test_remove_node_takes_display_and_storage_nodes_along(scene):
    seq, browser, proxy = sb.loop_to_sequence(_grey_loop(n=2), scene=scene)
    seg, _ = sb.mask_to_segmentation(np.ones((24, 32), bool), proxy, scene=scene)
    sb.segmentation_to_mask(seg, proxy, scene=scene)
    for node in (browser, seq, proxy, seg):
        sb.remove_node(node, scene=scene)
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    assert [n.GetClassName() for n in nodes if not n.GetSingletonTag() and not n.IsA("vtkMRMLSubjectHierarchyNode")] == []
    sb.remove_node(proxy, scene=scene)  # already gone: nothing happens


# ------------------------------------------------------------------ Sample Data: the phantom loop


def test_sample_phantom_loads_as_a_playing_sequence_of_the_phantom_loop(scene, tmp_path):
    from UltrasoundRefineLib.phantom import loop_seed, make_phantom_loop

    proxy = sb.load_sample_phantom(folder=tmp_path, scene=scene)
    # the file Sample Data wrote is the phantom's loop 0 of seed SAMPLE_PHANTOM_SEED ...
    (written,) = sorted((tmp_path / "loops").glob("*.dcm"))
    expected = make_phantom_loop(loop_seed(sb.SAMPLE_PHANTOM_SEED, 0)).loop
    # ... and the scene holds it as a sequence, frame for frame
    seq = scene.GetFirstNodeByName(sb.SAMPLE_PHANTOM_NAME)
    assert seq is not None and seq.IsA("vtkMRMLSequenceNode")
    assert sb.sequence_for_volume(proxy, scene=scene) is seq
    loaded = sb.loop_from_sequence(seq)
    assert loaded.frames.shape == expected.frames.shape
    assert np.array_equal(loaded.frames, expected.frames)
    assert written.stat().st_size > expected.frames.nbytes


def test_sample_phantom_source_downloads_nothing():
    kw = sb.sample_phantom_source("icon.png")
    assert kw["uris"] is None and "checksums" not in kw
    assert kw["customDownloader"] is sb.load_sample_phantom
    assert kw["sampleName"] == kw["nodeNames"] == sb.SAMPLE_PHANTOM_NAME
    assert kw["thumbnailFileName"] == "icon.png" and kw["category"] == sb.SAMPLE_CATEGORY
