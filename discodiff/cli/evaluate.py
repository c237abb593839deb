"""The eval command: models of any family × an evaluation set → a report folder (:mod:`discodiff.evaluation.protocol`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import MAX_DURATION_SECONDS, MAX_GUIDANCE, MAX_INFERENCE_STEPS
from ..diffusion.sampling import SCHEDULERS
from ..errors import ConfigError, DataError, require_module
from .common import QuietOption, check_choice, library_progress
from .model import MAX_BATCH_SIZE, MAX_SEED, MIN_DURATION_SECONDS

MAX_BOOTSTRAP = 100_000
CREPE_MODELS = ("tiny", "full")


def embedder_names(names: list[str], codec: str | None, clap: str | None, crepe_model: str | None) -> list[str]:
    """The embedder names (default ``crepe``), checked with the options that belong to them."""
    from ..evaluation.embedders import EMBEDDERS

    names = list(names) or ["crepe"]
    for name in names:
        check_choice("--embedder", name, EMBEDDERS)
    if len(set(names)) < len(names):
        raise ConfigError(f"--embedder {', '.join(names)}: each embedder once")
    for flag, value, owner in (("--embedder-codec", codec, "codec"), ("--embedder-clap", clap, "clap"),
                               ("--crepe-model", crepe_model, "crepe")):
        if value is not None and owner not in names:
            raise ConfigError(f"{flag} is for the {owner} embedder; add --embedder {owner} or drop {flag}")
    if "codec" in names and codec is None:
        raise ConfigError("--embedder codec needs --embedder-codec DIR (a codec directory, hub id, or 'tiny'): the codec "
                          "whose latents embed the clips, the same for every model")
    if crepe_model is not None:
        check_choice("--crepe-model", crepe_model, CREPE_MODELS)
    return names


def build_embedders(names: list[str], codec: str | None, clap: str | None, crepe_model: str | None, device: str):
    from ..evaluation.embedders import make_embedder

    built = {}
    for name in names:
        if name == "codec":
            built[name] = make_embedder("codec", id_or_path=codec)
        elif name == "crepe":
            built[name] = make_embedder("crepe", model=crepe_model or "tiny", device=device)
        elif name == "clap":
            built[name] = make_embedder("clap", device=device, **({"id_or_path": clap} if clap else {}))
        elif name == "encodec":
            built[name] = make_embedder("encodec", device=device)
        else:
            built[name] = make_embedder(name)
    return built


def evaluate(
    models: list[str] = typer.Option(..., "--model", help="Model directory, or NAME=DIR, to evaluate (repeatable); "
                                     "any family that generates. Reported under NAME (default: the folder's name)."),
    data: Path = typer.Option(None, "--data", help="Rendered track folders (any depth, with captions.jsonl): each model "
                              "accompanies the vocal excerpts of one Bach split; the real accompaniments are the reference."),
    prompts: Path = typer.Option(None, "--prompts", help="Instead of --data: a UTF-8 file of prompts, one per line (text "
                                 "only; no reference: CLAP score and speed)."),
    out: Path = typer.Option(..., "--out", help="Report folder: new or empty, or one an earlier eval wrote (resumed)."),
    split: str = typer.Option(None, "--split", help="Bach split of --data: train or validation [default: validation]."),
    limit: int = typer.Option(None, "--limit", min=1, help="The first N tracks by track id (N >= 2) or prompts [default: all]."),
    seconds: float = typer.Option(None, "--seconds", min=0.5, max=MAX_DURATION_SECONDS,
                                  help="Seconds of each track to accompany (the excerpt) [default: 10]."),
    excerpt: str = typer.Option(None, "--excerpt", help="Where the excerpt is cut: middle or start [default: middle]."),
    duration: float = typer.Option(None, "--duration", min=MIN_DURATION_SECONDS, max=MAX_DURATION_SECONDS,
                                   help="Seconds generated per prompt with --prompts [default: 10]."),
    embedders: list[str] = typer.Option([], "--embedder", help="Embedder for KAD/FAD (repeatable): crepe, codec, clap "
                                        "(also the CLAP score), mert, hubert, encodec [default: crepe]."),
    embedder_codec: str = typer.Option(None, "--embedder-codec", help="The codec of --embedder codec: a DacModel "
                                       "directory, hub id, or 'tiny'."),
    embedder_clap: str = typer.Option(None, "--embedder-clap", help="The CLAP model of --embedder clap: hub id or "
                                      "directory [default: laion/clap-htsat-unfused, local files first]."),
    crepe_model: str = typer.Option(None, "--crepe-model", help="CREPE capacity of --embedder crepe: tiny or full "
                                    "[default: tiny]."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Item i is generated with seed + i; also the bootstrap's seed."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, max=MAX_BATCH_SIZE,
                                   help="Items per generation call (fixed batches of consecutive items)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, max=MAX_BOOTSTRAP,
                                  help="Bootstrap replicates of the 95 % intervals (0: none)."),
    steps: int = typer.Option(None, "--steps", min=1, max=MAX_INFERENCE_STEPS, help="Inference steps of diffusion models [default: the model's]."),
    text_guidance: float = typer.Option(None, min=0.0, max=MAX_GUIDANCE, help="Text guidance scale [default: the model's]."),
    vocal_guidance: float = typer.Option(None, min=0.0, max=MAX_GUIDANCE, help="Vocal guidance scale [default: the model's]."),
    scheduler: str = typer.Option(None, help=f"Sampler of diffusion models: {', '.join(SCHEDULERS)} [default: the model's]."),
    temperature: float = typer.Option(None, min=0.01, max=10.0, help="Sampling temperature of AR models [default: the model's]."),
    top_k: int = typer.Option(None, "--top-k", min=0, help="Top-k of AR models, 0 = all [default: the model's]."),
    top_p: float = typer.Option(None, "--top-p", min=0.01, max=1.0, help="Nucleus mass of AR models [default: the model's]."),
    device: str = typer.Option(None, "--device", help="cpu or cuda for the models and embedders [default: cuda when available]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace work in --out made with other settings."),
    quiet: bool = QuietOption,
) -> None:
    """Evaluate models of any family on one evaluation set: KAD/FAD/FAD∞, vocal fit, CLAP score, speed; a rerun resumes.

    `accelerate launch --multi_gpu --num_processes N -m discodiff.cli eval ...` shards generation and embedding across
    the processes (each on its own device) and the main process writes the report."""
    from ..evaluation import protocol
    from ..outputs import check_output_dir

    # --- every input, before any model loads ---
    if (data is None) == (prompts is None):
        raise ConfigError("give exactly one of --data (rendered tracks: vocal-conditioned) or --prompts (a prompt list)")
    if data is not None and duration is not None:
        raise ConfigError(f"--duration {duration:g} is for --prompts; with --data each output takes its vocal excerpt's "
                          "length (--seconds)")
    if prompts is not None:
        given = [flag for flag, value in (("--split", split), ("--seconds", seconds), ("--excerpt", excerpt))
                 if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: for --data; a prompt list takes --duration")
    if scheduler is not None:
        check_choice("--scheduler", scheduler, SCHEDULERS)
    names = embedder_names(embedders, embedder_codec, embedder_clap, crepe_model)
    state = protocol.distributed_state()  # several processes under `accelerate launch`, else None
    main = state is None or state.is_main_process
    device = protocol.process_device(device, state)  # --device, else this process's own
    specs = protocol.model_specs(models)
    sampling = {"num_inference_steps": steps, "text_guidance": text_guidance, "vocal_guidance": vocal_guidance,
                "scheduler": scheduler, "temperature": temperature, "top_k": top_k, "top_p": top_p}
    labels = {"num_inference_steps": "--steps"}
    for name, value in sampling.items():
        if value is not None and not any(name in spec.family.sample_options for spec in specs):
            flag = labels.get(name, f"--{name.replace('_', '-')}")
            families = ", ".join(sorted({spec.family.name for spec in specs}))
            raise ConfigError(f"{flag}: not an option of any model given (families: {families}); drop it")
    options = {spec.name: protocol.family_options(spec.family, sampling) for spec in specs}
    if data is not None:
        require_module("librosa", "eval", "the vocal fit (pYIN, chroma, onsets)")
        if out.resolve().is_relative_to(data.resolve()):
            raise DataError(f"--out {out} lies inside --data {data}; its files would be scanned as tracks: choose a "
                            "folder outside it")
        eval_set = protocol.tracks_set(data, split or "validation", limit,
                                       protocol.DEFAULT_SECONDS if seconds is None else seconds, excerpt or "middle")
    else:
        eval_set = protocol.prompts_set(prompts, protocol.DEFAULT_DURATION if duration is None else duration, limit)
    if main:  # the main process checks and claims --out; the others would race its writes there
        check_output_dir(out, what="--out", marker=protocol.EVAL_FILE, reuse=True)
        settings = {spec.name: protocol.model_settings(spec, options[spec.name], seed, batch_size, device)
                    for spec in specs}
        protocol.check_resumable(out, eval_set, settings, overwrite)

    with library_progress(not quiet and main):
        built = build_embedders(names, embedder_codec, embedder_clap, crepe_model, device)
        result = protocol.run_evaluation(eval_set, specs, built, out, options=options, seed=seed, batch_size=batch_size,
                                         bootstrap=bootstrap, device=device, overwrite=overwrite, progress=not quiet)

    if not main:
        return
    record = result.record
    what = (f"{len(eval_set.items)} tracks of the Bach {eval_set.settings['split']} split"
            if eval_set.has_reference else f"{len(eval_set.items)} prompts")
    typer.echo(f"{out}: {len(specs)} model(s) on {what}; embedders {', '.join(names)}")
    first = names[0]
    for spec in specs:
        model = record["models"][spec.name]
        kad = model["kad"][first]
        quality = (f"KAD[{first}] {kad['value']:.4g}" + (f" [{kad['ci_low']:.4g}, {kad['ci_high']:.4g}]"
                                                         if kad.get("ci_low") is not None else "")
                   if kad["value"] is not None else f"KAD[{first}] —")
        typer.echo(f"  {spec.name} ({spec.family.name}): {quality}, RTF {model['speed']['mean_rtf']:.3g}, "
                   f"{model['speed']['mean_wall_s_per_item']:.3g} s per item; {result.generated[spec.name]} generated, "
                   f"{result.resumed[spec.name]} from an earlier run")
    typer.echo(f"  report: {out / protocol.REPORT_FILE}, numbers: {out / protocol.METRICS_FILE}, "
               f"{sum(1 for path in result.files if path.suffix == '.png')} plot(s) in {out / protocol.PLOTS_DIR}")


def convert_clap(
    checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                      help="LAION CLAP .pt checkpoint (e.g. music_audioset_epoch_15_esc_90.14.pt)."),
    out_dir: Path = typer.Argument(..., help="Output transformers ClapModel directory (new or empty)."),
    tokenizer: Path = typer.Option(None, "--tokenizer", exists=True, file_okay=False,
                                   help="Folder with roberta-base's tokenizer (vocab.json, merges.txt) to save with "
                                   "the model as a full ClapProcessor [default: model + feature extractor only]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT_DIR if it already holds a CLAP model."),
) -> None:
    """Convert a LAION CLAP checkpoint (HTSAT-base + RoBERTa, no fusion: the music ones) into a transformers
    ClapModel directory for `eval --embedder clap --embedder-clap DIR`; laion-clap is not needed."""
    from ..evaluation.clap_convert import convert_clap_checkpoint

    convert_clap_checkpoint(checkpoint, out_dir, overwrite=overwrite, tokenizer=tokenizer)
    typer.echo(f"wrote {out_dir}")
    if tokenizer is None:
        typer.echo(f"no tokenizer saved: --embedder-clap needs one; copy roberta-base's tokenizer files (vocab.json, "
                   f"merges.txt) into {out_dir}, or rerun with --tokenizer DIR --overwrite")
