"""Caption datasets (``discodiff captions …``): describe → tags → rephrase → rank → release, over a resumable work
folder (:mod:`.work`), batched and sharded with ``accelerate launch``.

- :mod:`.clips`: the clips (a rendered corpus or a folder of audio + metadata).
- :mod:`.describe`: raw descriptions from an audio-language model (transformers) or an OpenAI-compatible endpoint.
- :mod:`.tags`: tag summaries from metadata (rendered, MTG-Jamendo, FMA), tempo and key from the audio.
- :mod:`.rephrase`: captions from description + tags (tags take precedence) by an instruct LLM, an endpoint, or the
  deterministic template fallback; :mod:`.filters` drops contradicting, leaking, long and duplicate captions.
- :mod:`.rank`: the paper's filter: a Gaussian (Ledoit–Wolf) of a reference collection's audio embeddings, each clip
  ranked by its log-likelihood (:func:`rank_by_likelihood`).
- :mod:`.release`: a Hugging Face dataset folder (parquet shards, dataset card), pushed to the hub when online.
- :mod:`.steps`: the steps over a work folder; :mod:`.templates`, :mod:`.endpoint`: prompts and the endpoint client.
"""

from .clips import Clip, collect_clips
from .filters import caption_problem, filter_captions
from .rank import GaussianReference, keep_top, rank_by_likelihood, rank_table, read_ranking_csv, write_ranking_csv
from .release import DatasetCardInfo, push_dataset, release_features, write_dataset
from .tags import Tags, estimate_key, estimate_tempo, read_metadata, tags_from_metadata
from .templates import PromptTemplate

__all__ = ["Clip", "DatasetCardInfo", "GaussianReference", "PromptTemplate", "Tags", "caption_problem",
           "collect_clips", "estimate_key", "estimate_tempo", "filter_captions", "keep_top", "push_dataset",
           "rank_by_likelihood", "rank_table", "read_metadata", "read_ranking_csv", "release_features",
           "tags_from_metadata", "write_dataset", "write_ranking_csv"]
