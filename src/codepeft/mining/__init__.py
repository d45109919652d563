"""Mining instruction data from Python sources: walk, parse (never import), filter, deduplicate, split."""

from codepeft.mining.filters import FilterSettings
from codepeft.mining.pipeline import MineSettings, MiningSummary, mine, summary_path, write_dataset
from codepeft.mining.walk import SourceSet, resolve_target

__all__ = ["FilterSettings", "MineSettings", "MiningSummary", "SourceSet", "mine", "resolve_target",
           "summary_path", "write_dataset"]
