"""Where trials run (local processes; Kubernetes pods) and the one Study loop that drives them."""

from rung.runtime.base import Event, Finished, Outcome, Report, Runtime, SegmentSpec
from rung.runtime.loop import StudyLoop
from rung.runtime.records import FolderRecords, MemoryRecords, RecordStore, TrialDoc

__all__ = ["Event", "Finished", "Outcome", "Report", "Runtime", "SegmentSpec", "StudyLoop",
           "FolderRecords", "MemoryRecords", "RecordStore", "TrialDoc"]
