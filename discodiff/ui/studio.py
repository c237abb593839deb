"""The web studio: a vocal take and a prompt in, ranked accompaniments out (``discodiff studio``).

:func:`run_studio` is one request without a browser, by the rules of ``discodiff sample --candidates``: the take is read
and validated by :func:`discodiff.cli.common.read_input` (unreadable, empty, NaN) and by the call's own checks (at most
:data:`~discodiff.call_inputs.MAX_DURATION_SECONDS`); a silent take is refused, because the candidates are ranked by
their fit with it. The model directory (default: the shipped model, its checksums verified) is loaded once and kept in
``pipelines``, the cache of the studio that asks; a family that does not generate (a codec) is refused, and only the
settings the model's family takes are passed to it. :func:`~discodiff.evaluation.candidates.generate_candidates` makes
and ranks the candidates; each one's accompaniment, mix and spectrograms are written to ``out_dir`` as ``discodiff
sample`` writes them.

:func:`build_studio` lays the request out with gradio (imported only there: the ``ui`` extra) in
:data:`MAX_STUDIO_CANDIDATES` fixed result slots (gradio's components are static; unused slots are hidden), every
request writing to a folder of its own in gradio's cache; :func:`launch_studio` serves it, on the loopback interface
unless told otherwise.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..audio import SilentAudioWarning, resample
from ..call_inputs import MAX_DURATION_SECONDS, MAX_GUIDANCE, check_prompts, vocal_batch
from ..cli.common import read_input
from ..cli.errors import error_line
from ..cli.model import MIN_DURATION_SECONDS, candidate_names, describe_scores, write_outputs
from ..cli.studio import DEFAULT_HOST, DEFAULT_PORT
from ..config import MAX_INFERENCE_STEPS
from ..errors import AudioError, DiscoDiffError, GenerationError, require_module
from ..evaluation.candidates import RankedCandidates, check_num_candidates, generate_candidates
from ..pipeline_utils import Family, directory_family, load_pipeline
from ..pretrained import shipped_model_dir, verify_checksums

MAX_STUDIO_CANDIDATES = 8  # result slots on the page; `discodiff sample --candidates` goes up to MAX_CANDIDATES
CACHED_PIPELINES = 2  # model directories a studio keeps loaded; a third drops the oldest
SPECTROGRAM_HEIGHT = 480  # pixels of a slot's spectrogram picture (three panels of 513 frequency rows each, scaled)
# spectrograms stretched in time over the slot's width (gradio's own rules keep a picture's proportions)
CSS = (".spectrogram .image-frame, .spectrogram img { width: 100% !important; height: 100% !important; } "
       ".spectrogram img { object-fit: fill !important; }")
DELETE_CACHE = (3600, 86400)  # every hour gradio deletes the files the studio served more than a day ago (all on exit)
# the sample options the studio has fields for, by the fields' labels
OPTION_FIELDS = {"num_inference_steps": "Steps", "text_guidance": "Text guidance", "vocal_guidance": "Vocal guidance"}


@dataclass(frozen=True)
class StudioRequest:
    """The studio's form: ``vocal`` a file; None leaves a setting at the model's default (``model_dir``: the shipped
    model)."""

    prompt: str
    vocal: str | Path | None = None
    model_dir: str | Path | None = None
    num_inference_steps: int | None = None
    text_guidance: float | None = None
    vocal_guidance: float | None = None
    seed: int = 0
    num_candidates: int = 2
    duration: float | None = None


@dataclass(frozen=True)
class CandidateFiles:
    """One ranked candidate as the studio shows it: its WAVs (``mix`` None without a vocal), its spectrogram PNG (vocal /
    accompaniment / mix, or the output alone), its ranking ``score`` (None when unranked) and ``scores``, the line that
    describes it."""

    rank: int
    seed: int
    score: float | None
    accompaniment: Path
    mix: Path | None
    spectrogram: Path
    scores: str


@dataclass(frozen=True)
class StudioResult:
    """The candidates of one request, best first; ``summary`` says what was generated and how it is ranked;
    ``warnings`` about the take (e.g. samples beyond full scale), the model (e.g. untrained) or settings it does not
    take."""

    candidates: list[CandidateFiles]
    summary: str
    warnings: list[str]


def run_studio(request: StudioRequest, pipelines: dict, out_dir: str | Path, clap=None,
               progress: bool = True) -> StudioResult:
    """Generate, rank and write the candidates of ``request`` into ``out_dir`` (see the module docstring).

    ``pipelines``: loaded models by directory, filled on first use; ``clap``: a
    :class:`~discodiff.evaluation.embedders.ClapEmbedder` that adds the CLAP score to the ranking.
    """
    check_prompts(request.prompt)
    count = check_studio_candidates(request.num_candidates)
    if request.duration is not None and request.vocal is not None:
        raise GenerationError(f"Duration {request.duration:g} s and a vocal both set the length; the output takes the "
                              "vocal's length, so clear Duration")
    directory = model_directory(request.model_dir)
    family = generating_family(directory)
    options, notes = family_options(family, request)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        vocal, vocal_rate = read_vocal(request.vocal) if request.vocal is not None else (None, None)
        pipeline = cached_pipeline(pipelines, directory)
        if vocal is not None:
            vocal = resample(vocal, vocal_rate, pipeline.sample_rate)
        ranked = generate_candidates(pipeline, request.prompt, vocal=None if vocal is None else vocal[0],
                                     duration=request.duration, num_candidates=count, seed=request.seed,
                                     progress=progress, clap=clap, **options)
    notes += shown_warnings(caught)
    seconds = ranked.best.audio.shape[-1] / ranked.sample_rate
    settings = "".join(f", {OPTION_FIELDS[name].lower()} {value:g}" for name, value in options.items())
    summary = (f"{count} candidate{'s' if count > 1 else ''} of {seconds:.1f} s from {directory} ('{family.name}' "
               f"model{settings}), ranked by {ranked.ranked_by}")
    return StudioResult(write_candidates(ranked, vocal, Path(out_dir)), summary, notes)


def check_studio_candidates(num_candidates) -> int:
    """``num_candidates`` if it is a whole number in ``1 … MAX_STUDIO_CANDIDATES`` (the page's result slots)."""
    count = check_num_candidates(num_candidates)
    if count > MAX_STUDIO_CANDIDATES:
        raise GenerationError(f"{count} candidates: the studio shows at most {MAX_STUDIO_CANDIDATES}; ask for fewer, or "
                              f"run `discodiff sample --candidates {count}`")
    return count


def model_directory(model_dir: str | Path | None) -> Path:
    """``model_dir``, or the shipped model's directory when it is None or blank."""
    if model_dir is None or not str(model_dir).strip():
        return shipped_model_dir()
    return Path(str(model_dir).strip()).expanduser()


def generating_family(directory: Path) -> Family:
    """The family of the model directory ``directory``; refused when it does not generate music (a codec)."""
    family = directory_family(directory)
    family.check_generates(f"the model directory {directory}")
    return family


def family_options(family: Family, request: StudioRequest) -> tuple[dict, list[str]]:
    """The sample options of ``request`` that ``family`` takes, and a note naming the given ones it does not."""
    given = {name: getattr(request, name) for name in OPTION_FIELDS if getattr(request, name) is not None}
    options = {name: value for name, value in given.items() if name in family.sample_options}
    left_out = [OPTION_FIELDS[name] for name in given if name not in options]
    notes = [f"{', '.join(left_out)}: not a setting of '{family.name}' models, left out"] if left_out else []
    return options, notes


def read_vocal(path: str | Path) -> tuple[torch.Tensor, int]:
    """The take at ``path`` as ``discodiff sample --vocal`` reads it: validated mono ``([1, T], sample_rate)``, warnings
    (e.g. samples beyond full scale) left to the caller. A silent take is refused: candidates are ranked by their fit
    with it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SilentAudioWarning)
        try:
            audio, rate = read_input(Path(path))
        except SilentAudioWarning as silent:
            raise AudioError(f"{silent}; the candidates are ranked by how well they fit the vocal, so upload or record a "
                             "take in which the voice is heard") from None
    vocal_batch(audio, 1, rate, audio.device)  # the call's own checks of a vocal: at most MAX_DURATION_SECONDS
    return audio, rate


def shown_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The messages of the user warnings in ``caught`` (about the take or the model, e.g. an untrained one), once each;
    the others (library deprecations) go to stderr as usual."""
    for warning in caught:
        if not issubclass(warning.category, UserWarning):
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return list(dict.fromkeys(str(warning.message) for warning in caught if issubclass(warning.category, UserWarning)))


def cached_pipeline(pipelines: dict, directory: Path):
    """The pipeline of ``directory`` from ``pipelines``; on first use loaded (the shipped model after its checksums are
    verified) and kept, dropping the oldest beyond :data:`CACHED_PIPELINES`."""
    key = directory.resolve()
    if key not in pipelines:
        if key == shipped_model_dir():
            verify_checksums(key)
        while len(pipelines) >= CACHED_PIPELINES:
            del pipelines[next(iter(pipelines))]
        pipelines[key] = load_pipeline(key)
    return pipelines[key]


def write_candidates(ranked: RankedCandidates, vocal: torch.Tensor | None, out_dir: Path) -> list[CandidateFiles]:
    """Each candidate's accompaniment, mix with ``vocal [1, T]`` (when given) and spectrograms in ``out_dir``, named as
    ``discodiff sample --candidates`` names them: ``accompaniment_rank1.wav``, ``mix_rank1.wav``,
    ``spectrograms_rank1.png``, …"""
    count = len(ranked.candidates)
    outs = candidate_names(out_dir / "accompaniment.wav", count)
    mixes = candidate_names(out_dir / "mix.wav", count) if vocal is not None else []
    pictures = candidate_names(out_dir / "spectrograms.png", count)
    files = []
    for index, candidate in enumerate(ranked.candidates):
        write_outputs(index, candidate.audio, vocal, ranked.sample_rate, outs, mixes, pictures)
        files.append(CandidateFiles(rank=candidate.rank, seed=candidate.seed, score=candidate.score,
                                    accompaniment=outs[index], mix=mixes[index] if mixes else None,
                                    spectrogram=pictures[index],
                                    scores=f"Rank {candidate.rank} · seed {candidate.seed}{describe_scores(candidate)}"))
    return files


def model_settings(pipelines: dict, model_dir: str | Path | None) -> tuple[Path, Family, dict]:
    """The directory of ``model_dir`` (see :func:`model_directory`), its family and the settings its pipeline (loaded
    into ``pipelines``) uses by default: its sample options' defaults and ``duration``; a family that does not generate
    is refused."""
    directory = model_directory(model_dir)
    family = generating_family(directory)
    pipeline = cached_pipeline(pipelines, directory)
    defaults = {name: value for name, value in getattr(pipeline, "defaults", {}).items() if name in family.sample_options}
    return directory, family, {**defaults, "duration": pipeline.default_duration}


INTRODUCTION = """# discodiff studio
Upload or record a vocal take, describe the accompaniment, and generate candidates ranked by how well they fit the
take (consonance and rhythm; plus the CLAP score when the studio was started with `--clap`). The settings start at the
model's defaults; each player's download button gives the WAV."""


def build_studio(model_dir: str | Path | None = None, clap=None):
    """The studio's page, a ``gradio.Blocks``: the form of :class:`StudioRequest` (``model_dir``: the directory it
    starts with, default the shipped model; its settings fill in from the model when the page opens and when the
    directory changes), a Generate button with a progress bar, and one slot per candidate (its scores, accompaniment
    and mix players, spectrograms). ``clap``: a ClapEmbedder that adds CLAP scores."""
    gr = require_module("gradio", "ui", "the studio")
    pipelines: dict = {}  # model directory → its loaded pipeline, for this studio only
    with gr.Blocks(title="discodiff studio", analytics_enabled=False, delete_cache=DELETE_CACHE) as studio:
        gr.Markdown(INTRODUCTION)
        with gr.Row():
            with gr.Column():
                vocal = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Vocal take (upload or record)",
                                 elem_id="vocal")
                prompt = gr.Textbox(label="Prompt", placeholder="a calm Baroque chorale for strings and organ",
                                    elem_id="prompt")
                model = gr.Textbox(str(model_directory(model_dir)), label="Model directory", elem_id="model-dir",
                                   info=f"Empty: the shipped Bach-chorales model, {shipped_model_dir()}")
                model_status = gr.Markdown(elem_id="model-status")
            with gr.Column():
                steps = gr.Number(label="Steps", precision=0, minimum=1, maximum=MAX_INFERENCE_STEPS, elem_id="steps")
                text_guidance = gr.Number(label="Text guidance", info="1 = none, 0 ignores the prompt", minimum=0,
                                          maximum=MAX_GUIDANCE, elem_id="text-guidance")
                vocal_guidance = gr.Number(label="Vocal guidance", info="1 = none, 0 ignores the vocal", minimum=0,
                                           maximum=MAX_GUIDANCE, elem_id="vocal-guidance")
                seed = gr.Number(0, label="Seed", info="Candidate i draws from seed + i", precision=0, minimum=0,
                                 elem_id="seed")
                num_candidates = gr.Slider(1, MAX_STUDIO_CANDIDATES, value=4, step=1, precision=0, label="Candidates",
                                           elem_id="num-candidates")
                duration = gr.Number(label="Duration (s)", info="Without a vocal; a vocal sets the length",
                                     minimum=MIN_DURATION_SECONDS, maximum=MAX_DURATION_SECONDS, elem_id="duration-seconds")
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        summary = gr.Markdown(elem_id="summary")
        slots = []
        for first in range(1, MAX_STUDIO_CANDIDATES + 1, 2):
            with gr.Row():
                slots += [result_slot(gr, number) for number in range(first, min(first + 2, MAX_STUDIO_CANDIDATES + 1))]

        settings = [steps, text_guidance, vocal_guidance, duration]
        show_model = model_handler(gr, pipelines)
        # model loads and generations take turns (one at a time, whoever asks: they share the machine and the cache)
        gr.on([studio.load, model.submit, model.blur], show_model, inputs=model, outputs=[model_status, *settings],
              concurrency_limit=1, concurrency_id="model")
        vocal.change(lambda take: gr.update(visible=take is None), inputs=vocal, outputs=duration)
        handler = request_handler(gr, pipelines, clap, Path(studio.GRADIO_CACHE))
        generate.click(handler, inputs=[vocal, prompt, model, steps, text_guidance, vocal_guidance, seed, num_candidates,
                                        duration],
                       outputs=[summary] + [component for slot in slots for component in slot], concurrency_limit=1,
                       concurrency_id="model")
    return studio


def model_handler(gr, pipelines: dict):
    """The model directory's function: loads the model (see :func:`model_settings`) and fills the settings with its
    defaults, hiding those its family does not take; a model that cannot be used is named in the status line."""

    def show_model(model_dir):
        try:
            directory, family, defaults = model_settings(pipelines, model_dir)
        except (DiscoDiffError, OSError) as err:
            return [f"**This model cannot be used:** {error_line(err)}"] + [gr.update()] * (len(OPTION_FIELDS) + 1)
        fields = [gr.update(value=defaults.get(name), visible=name in family.sample_options) for name in OPTION_FIELDS]
        return [f"A '{family.name}' model: {directory}", *fields, gr.update(value=defaults["duration"])]

    return show_model


def result_slot(gr, number: int) -> tuple:
    """Candidate slot ``number`` (hidden until used): its column, scores, accompaniment and mix players, spectrograms."""
    with gr.Column(visible=False, elem_id=f"candidate-{number}") as column:
        scores = gr.Markdown(elem_id=f"candidate-{number}-scores")
        accompaniment = gr.Audio(type="filepath", label="Accompaniment", interactive=False, buttons=["download"],
                                 elem_id=f"candidate-{number}-accompaniment")
        mix = gr.Audio(type="filepath", label="Mix with the vocal", interactive=False, buttons=["download"],
                       elem_id=f"candidate-{number}-mix")
        spectrogram = gr.Image(type="filepath", label="Spectrograms: vocal, accompaniment, mix", interactive=False,
                               buttons=["download"], height=SPECTROGRAM_HEIGHT, elem_classes=["spectrogram"],
                               elem_id=f"candidate-{number}-spectrogram")
    return column, scores, accompaniment, mix, spectrogram


def request_handler(gr, pipelines: dict, clap, cache_dir: Path):
    """The Generate button's function: the form's fields → :func:`run_studio` in a new folder under ``cache_dir`` → the
    summary and every slot's values; a user error becomes a ``gradio.Error`` with the project's message."""

    def generate(vocal, prompt, model_dir, steps, text_guidance, vocal_guidance, seed, num_candidates, duration,
                 progress=gr.Progress(track_tqdm=True)):  # the bar follows the pipeline's tqdm bars
        request = StudioRequest(prompt=prompt, vocal=vocal, model_dir=model_dir, num_inference_steps=steps,
                                text_guidance=text_guidance, vocal_guidance=vocal_guidance, seed=seed,
                                num_candidates=num_candidates, duration=None if vocal is not None else duration)
        cache_dir.mkdir(parents=True, exist_ok=True)
        out_dir = Path(tempfile.mkdtemp(prefix="discodiff-studio-", dir=cache_dir))
        try:
            result = run_studio(request, pipelines, out_dir, clap=clap)
        except (DiscoDiffError, OSError) as err:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise gr.Error(error_line(err), print_exception=False) from err  # a user's error, not the studio's
        for message in result.warnings:
            gr.Warning(message)
        return [result.summary] + slot_values(gr, result.candidates)

    return generate


def slot_values(gr, candidates: list[CandidateFiles]) -> list:
    """The values of every result slot's components: the candidates' in the first slots, the rest hidden and empty."""
    values = []
    for index in range(MAX_STUDIO_CANDIDATES):
        if index < len(candidates):
            files = candidates[index]
            mix = None if files.mix is None else str(files.mix)
            label = "Spectrograms: vocal, accompaniment, mix" if mix is not None else "Spectrogram"
            values += [gr.update(visible=True), files.scores, str(files.accompaniment),
                       gr.update(value=mix, visible=mix is not None), gr.update(value=str(files.spectrogram), label=label)]
        else:
            values += [gr.update(visible=False), "", None, None, None]
    return values


def launch_studio(model_dir: str | Path | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                  share: bool = False, clap=None, block: bool = True):
    """Serve :func:`build_studio` at ``http://host:port`` (the loopback interface by default; ``share`` asks gradio for
    a public link). ``block=False`` returns the running studio (``.close()`` stops it) instead of serving until
    Ctrl-C."""
    studio = build_studio(model_dir, clap)
    studio.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, css=CSS)
    return studio
