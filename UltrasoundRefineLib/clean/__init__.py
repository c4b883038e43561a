"""Clean whole archives: every loop masked to its image region (0 outside, every frame), DICOM headers
de-identified (PS3.15 Basic Profile), written atomically beside a PHI-free manifest.

- :mod:`.masks`: where each loop's mask comes from (method, model, folder of masks, workspace)
- :mod:`.pixels`: masking decoded frames and storing them uncompressed with consistent pixel attributes
- :mod:`.deid`: header de-identification (dicognito plus what the profile removes beyond it)
- :mod:`.export`: one loop to its output file, in its own kind of container
- :mod:`.names`: where each output goes (hashed file names, keyed-hash folder names, or kept names)
- :mod:`.manifest`: the CSV; :mod:`.run`: the run over many inputs (safety, resume, quarantine)
"""

from UltrasoundRefineLib.clean.masks import LoopMask, folder_source, method_source, model_source, workspace_source
from UltrasoundRefineLib.clean.run import CleanReport, Quarantine, check_out_dir, clean

__all__ = [
    "CleanReport",
    "LoopMask",
    "Quarantine",
    "check_out_dir",
    "clean",
    "folder_source",
    "method_source",
    "model_source",
    "workspace_source",
]
