"""Model commands: new-model (a randomly initialised model directory) and sample (generate audio)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..audio import mix_with_vocal, save_audio, wav_bytes
from ..call_inputs import read_prompt_file
from ..config import MAX_DURATION_SECONDS, MAX_GUIDANCE, MAX_INFERENCE_STEPS
from ..diffusion.sampling import SCHEDULERS
from ..evaluation.candidates import MAX_CANDIDATES, fit_score
from ..errors import ConfigError
from ..outputs import AUDIO_OUTPUT_SUFFIXES, check_output_dir, check_output_file
from ..spectrogram import write_spectrogram_panels
from .common import QuietOption, check_choice, library_progress, read_input

MODEL_MARKER = "pipeline.json"
MIN_DURATION_SECONDS = 0.05
MAX_SEED = 2**63 - 1
MAX_BATCH_SIZE = 256
# the pipeline options `sample` has flags for (an error about a family's options lists only these)
CLI_SAMPLE_FLAGS = ("num_inference_steps", "text_guidance", "vocal_guidance", "scheduler", "temperature", "top_k", "top_p",
                    "overlap")


def new_model(
    out_dir: Path = typer.Argument(..., help="Model directory to create (new or empty)."),
    config: Path = typer.Option(..., "--config", help="Model config, e.g. configs/tiny.yaml."),
    overrides: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable), e.g. --set sampling.duration=10."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Initialisation seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it already holds a model."),
) -> None:
    """Write a randomly initialised model directory of the family the config names (tiny configs build their own
    codec and text encoder)."""
    from ..pipeline_utils import config_family

    family = config_family(config)
    model_config = family.config_class().from_yaml(config, overrides)
    check_output_dir(out_dir, what="model directory", marker=MODEL_MARKER, overwrite=overwrite)
    pipeline = family.builder()(model_config, seed=seed)
    sizes = {name: sum(p.numel() for p in module.parameters()) for name, module in pipeline.trainable_components().items()}
    check_output_dir(out_dir, what="model directory", marker=MODEL_MARKER, overwrite=overwrite,
                     expected_bytes=8 * sum(sizes.values()))
    with library_progress(False):
        pipeline.save_pretrained(out_dir)
    described = ", ".join(f"{name} {count / 1e6:.2f}M" for name, count in sizes.items())
    outcome = "its samples are noise until trained" if family.generates else "it is random until trained"
    typer.echo(f"wrote untrained {family.name} model to {out_dir} ({described} parameters); {outcome}")


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """The prompts of ``--prompt`` or ``--prompts-file`` (one per line, blank lines skipped)."""
    if (prompt is None) == (prompts_file is None):
        raise ConfigError("give exactly one of --prompt or --prompts-file")
    if prompt is not None:
        if not prompt.strip():
            raise ConfigError("--prompt is empty; describe the music, e.g. --prompt \"a calm Baroque chorale for strings\"")
        return [prompt]
    return read_prompt_file(prompts_file, "--prompts-file", ConfigError)


def output_names(path: Path, count: int) -> list[Path]:
    """``path`` for one output, ``stem_0.suffix``, ``stem_1.suffix`` … for a batch."""
    return [path] if count == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]


def shipped_model() -> Path:
    """The shipped model's directory, its files verified, announced in one line."""
    from ..pretrained import shipped_model_dir, verify_checksums

    directory = shipped_model_dir()
    if not (directory / MODEL_MARKER).is_file():
        raise ConfigError(f"no --model given and the shipped model is not installed ({directory} holds no "
                          f"{MODEL_MARKER}); pass --model DIR (a model from training export or new-model)")
    verify_checksums(directory)
    typer.echo(f"using the shipped model {directory} (Bach chorales, trained offline; its README.md is the model "
               "card); pass --model DIR for your own")
    return directory


def sample(
    model: Path = typer.Option(None, "--model", help="Model directory (from training export or new-model) "
                               "[default: the shipped Bach-chorales model, discodiff/pretrained/bach-chorales]."),
    prompt: str = typer.Option(None, "--prompt", help="Text prompt."),
    prompts_file: Path = typer.Option(None, "--prompts-file", exists=True, dir_okay=False, readable=True,
                                      help="UTF-8 text file, one prompt per line (blank lines skipped), for a batch."),
    vocal: Path = typer.Option(None, "--vocal", help="Vocal recording to accompany; the output takes its length."),
    duration: float = typer.Option(None, min=MIN_DURATION_SECONDS, max=MAX_DURATION_SECONDS,
                                   help="Seconds to generate without a vocal [default: the model's]; with --vocal the output takes its length."),
    out: Path = typer.Option(Path("accompaniment.wav"), "--out",
                             help=f"Output file ({', '.join(AUDIO_OUTPUT_SUFFIXES)}); a batch adds _0, _1, … to the name."),
    mix: Path = typer.Option(None, "--mix", help="Also write vocal + accompaniment here (needs --vocal)."),
    spectrogram: Path = typer.Option(None, "--spectrogram",
                                     help="Also write a .png of spectrograms here: vocal, accompaniment, mix (or the output alone)."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Sampling seed; sample i of a batch uses seed + i."),
    steps: int = typer.Option(None, "--steps", min=1, max=MAX_INFERENCE_STEPS, help="Inference steps [default: the model's]."),
    text_guidance: float = typer.Option(None, min=0.0, max=MAX_GUIDANCE,
                                        help="Text guidance scale; 1 = no guidance, 0 = ignore the prompt [default: the model's]."),
    vocal_guidance: float = typer.Option(None, min=0.0, max=MAX_GUIDANCE,
                                         help="Vocal guidance scale; 1 = no guidance, 0 = ignore the vocal [default: the model's]."),
    scheduler: str = typer.Option(None, help=f"Sampler: {', '.join(SCHEDULERS)} [default: the model's] (diffusion models)."),
    temperature: float = typer.Option(None, min=0.01, max=10.0,
                                      help="Sampling temperature of AR models [default: the model's]."),
    top_k: int = typer.Option(None, "--top-k", min=0, help="Keep the k most likely tokens, 0 = all (AR models) [default: the model's]."),
    top_p: float = typer.Option(None, "--top-p", min=0.01, max=1.0,
                                help="Nucleus sampling mass, 1 = off (AR models) [default: the model's]."),
    overlap: float = typer.Option(None, min=0.0, help="Seconds each window of an output longer than the model's window "
                                  "shares with the one before [default: a quarter of the window]."),
    candidates: int = typer.Option(1, "--candidates", min=1, max=MAX_CANDIDATES,
                                   help="Generate this many accompaniments in one batch and rank them by vocal fit (and "
                                        "CLAP score with --clap); written as OUT_rank1, OUT_rank2, … best first."),
    clap: str = typer.Option(None, "--clap", help="CLAP model (hub id or directory) to rank candidates by their CLAP "
                             "score against the prompt too."),
    batch_size: int = typer.Option(4, min=1, max=MAX_BATCH_SIZE, help="Prompts per forward batch with --prompts-file."),
    codec: str = typer.Option(None, "--codec", help="Use this local codec directory instead of the model's codec id."),
    text_encoder: str = typer.Option(None, "--text-encoder", help="Use this local text-encoder directory instead of the model's id."),
    quiet: bool = QuietOption,
) -> None:
    """Generate music (an accompaniment when --vocal is given) from a text prompt."""
    import torch

    from ..pipeline_utils import directory_family

    prompts = read_prompts(prompt, prompts_file)
    if scheduler is not None:
        check_choice("--scheduler", scheduler, SCHEDULERS)
    if duration is not None and vocal is not None:
        raise ConfigError(f"--duration {duration:g} and --vocal both set the length; the output takes the vocal's length, so drop --duration")
    if mix is not None and vocal is None:
        raise ConfigError("--mix needs --vocal (the mix is vocal + accompaniment); add --vocal take.wav or drop --mix")
    if candidates > 1 and len(prompts) > 1:
        raise ConfigError(f"--candidates {candidates} ranks the accompaniments of one prompt; give --prompt, not a "
                          f"--prompts-file of {len(prompts)} prompts")
    if clap is not None and candidates == 1:
        raise ConfigError("--clap ranks candidates by CLAP score; add --candidates N (N ≥ 2) or drop --clap")
    names = candidate_names if candidates > 1 else output_names
    count = max(candidates, len(prompts))
    outs, mixes = names(out, count), names(mix, count) if mix is not None else []
    pictures = names(spectrogram, count) if spectrogram is not None else []
    inputs = [p for p in (vocal, prompts_file) if p is not None]
    for name in outs + mixes:
        check_output_file(name, AUDIO_OUTPUT_SUFFIXES, what="--mix" if name in mixes else "--out", inputs=inputs)
    for name in pictures:
        check_output_file(name, (".png",), what="--spectrogram", inputs=inputs)
    if len({path.resolve() for path in outs + mixes + pictures}) < len(outs + mixes + pictures):
        raise ConfigError("--out, --mix and --spectrogram name the same file; give them different names")
    if model is None:
        model = shipped_model()
    family = directory_family(model)
    family.check_generates(f"--model {model}")
    family_options = {"num_inference_steps": steps, "text_guidance": text_guidance, "vocal_guidance": vocal_guidance,
                      "scheduler": scheduler, "temperature": temperature, "top_k": top_k, "top_p": top_p, "overlap": overlap}
    family.check_options(family_options, labels={"num_inference_steps": "--steps"}, flags_only=CLI_SAMPLE_FLAGS)
    family.check_options({"codec": codec, "text_encoder": text_encoder}, kind="load")
    vocal_audio, vocal_rate = read_input(vocal) if vocal is not None else (None, None)
    if vocal_audio is not None and vocal_audio.shape[-1] / vocal_rate > MAX_DURATION_SECONDS:
        raise ConfigError(f"--vocal {vocal} lasts {vocal_audio.shape[-1] / vocal_rate:.0f} s; at most {MAX_DURATION_SECONDS:.0f} s "
                          "can be generated in one call: cut the take")

    with library_progress(not quiet):
        given = {name: value for name, value in (("codec", codec), ("text_encoder", text_encoder)) if value is not None}
        pipeline = family.pipeline_class().from_pretrained(model, **given)
        rate = pipeline.sample_rate
        if vocal_audio is not None:
            from ..audio import resample

            vocal_audio = resample(vocal_audio, vocal_rate, rate)
            num_samples = vocal_audio.shape[-1]
        else:
            num_samples = round((duration if duration is not None else pipeline.default_duration) * rate)
        for name in outs + mixes:
            check_output_file(name, AUDIO_OUTPUT_SUFFIXES, expected_bytes=len(outs + mixes) * wav_bytes(num_samples))
        options = {name: value for name, value in family_options.items() if value is not None}
        if candidates > 1:
            from ..evaluation.candidates import generate_candidates

            embedder = None
            if clap is not None:
                from ..evaluation.embedders import ClapEmbedder

                embedder = ClapEmbedder.from_pretrained(clap)
            ranked = generate_candidates(pipeline, prompts[0], vocal=None if vocal_audio is None else vocal_audio[0],
                                         duration=duration, num_candidates=candidates, seed=seed, progress=not quiet,
                                         clap=embedder, **options)
            typer.echo(f"{candidates} candidates ranked by {ranked.ranked_by}:")
            for index, candidate in enumerate(ranked.candidates):
                line = write_outputs(index, candidate.audio, vocal_audio, rate, outs, mixes, pictures)
                typer.echo(f"  {candidate.rank}. {line}  seed {candidate.seed}{describe_scores(candidate)}")
            return
        for first in range(0, len(prompts), batch_size):
            batch = prompts[first : first + batch_size]
            generators = [torch.Generator().manual_seed(seed + first + i) for i in range(len(batch))]
            audios = pipeline(batch, vocal=vocal_audio, duration=duration, generator=generators, progress=not quiet,
                              **options).audios
            for i, audio in enumerate(torch.as_tensor(audios).cpu()):
                line = write_outputs(first + i, audio, vocal_audio, rate, outs, mixes, pictures)
                typer.echo(f"{line}  «{batch[i]}»")


def candidate_names(path: Path, count: int) -> list[Path]:
    """``stem_rank1.suffix`` … ``stem_rankN.suffix``: the outputs of ranked candidates, best first."""
    return [path.with_name(f"{path.stem}_rank{rank}{path.suffix}") for rank in range(1, count + 1)]


def write_outputs(index: int, audio, vocal_audio, rate: int, outs: list[Path], mixes: list[Path],
                  pictures: list[Path]) -> str:
    """Write output ``index`` (``audio [1, T]``), its mix and spectrograms where asked; the line that reports them."""
    save_audio(outs[index], audio, rate)
    line = f"{outs[index]}: {audio.shape[-1] / rate:.2f} s"
    panels = [("output", audio)]
    if vocal_audio is not None:
        mixture = mix_with_vocal(audio, vocal_audio)
        panels = [("vocal", vocal_audio[..., : audio.shape[-1]]), ("accompaniment", audio), ("mix", mixture)]
        if mixes:
            save_audio(mixes[index], mixture, rate)
            line += f"; mix {mixes[index]}"
    if pictures:
        write_spectrogram_panels(panels, pictures[index], rate)
        line += f"; spectrograms {pictures[index]}"
    return line


def describe_scores(candidate) -> str:
    """``; fit 0.41 (consonance 0.78, rhythmic 0.30); CLAP 0.12`` for the scores a candidate has."""
    text = ""
    if candidate.fit is not None:
        fit = candidate.fit
        text += (f"; fit {fit_score(fit):.3f} (consonance {fit.consonance:.3f}, rhythmic {fit.rhythmic:.3f}, "
                 f"harmonic {fit.harmonic:.3f})")
    if candidate.clap_score is not None:
        text += f"; CLAP {candidate.clap_score:.3f}"
    return text
