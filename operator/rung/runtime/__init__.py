"""Where trials run (local processes; Kubernetes pods) and the one Study loop that drives them."""

from rung.runtime.base import Ended, Event, Outcome, Refused, Report, Runtime, SegmentSpec
from rung.runtime.folder import FolderRecords
from rung.runtime.loop import StudyLoop, StudyState

__all__ = ["Ended", "Event", "Outcome", "Refused", "Report", "Runtime", "SegmentSpec", "StudyLoop", "StudyState",
           "FolderRecords"]
