"""Models of Rung's custom resources and the loader that turns manifests into them."""

from rung.api.study import ALGORITHMS, API_VERSION, MUTABLE_SPEC, Study, StudySpec
from rung.api.archsearch import ArchitectureSearch
from rung.api.load import load_manifest, load_study, parse_archsearch, parse_study

__all__ = ["ALGORITHMS", "API_VERSION", "MUTABLE_SPEC", "ArchitectureSearch", "Study", "StudySpec", "load_manifest",
           "load_study", "parse_archsearch", "parse_study"]
