"""What `convlens explain` writes and prints for a classification run: PNGs, the summary dict
(its --json), and the lines beside it, including which attribution was shown and why."""

from __future__ import annotations

from pathlib import Path

from convlens.cli.render import StepProgress, err, out, print_tables, significant
from convlens.errors import ConvlensError


def check_cam_stage(model, method: str | None, cam_stage: str | None) -> str | None:
    """``--cam-stage``: one of the stages Grad-CAM may look at, for a method that looks at a stage."""
    if cam_stage is None:
        return None
    from convlens.inspect import ATTRIBUTIONS
    from convlens.inspect.cam_stages import grad_cam_stages, stage_help, takes_stage

    if method is not None and not takes_stage(ATTRIBUTIONS.get(method)):
        raise ConvlensError(
            f"--cam-stage: {method} looks at pixels, not at a stage; drop --cam-stage or use --method grad-cam"
        )
    if cam_stage not in {s["stage"] for s in grad_cam_stages(model)}:
        raise ConvlensError(
            f"--cam-stage: Grad-CAM cannot look at {cam_stage!r}; choose one of: {stage_help(model)}"
        )
    return cam_stage


def measuring_note(run, method: str | None) -> bool:
    """One line on stderr before the first measurement of a run (it takes a while, once); whether
    one is coming (then a progress bar follows it)."""
    from convlens.inspect.run_faithfulness import FAITHFULNESS_FILE, stored_faithfulness

    if method is None and not stored_faithfulness(run).get("default"):
        err.print(
            "measuring which attribution method is most faithful on this run "
            f"(once; stored in {run.folder / FAITHFULNESS_FILE}) …",
            markup=False,
            soft_wrap=True,
        )
        return True
    return False


def write_explanation(run, pixels, image, out_dir: Path, stage, target, method, cam_stage) -> dict:
    """The PNGs of one explanation and its summary. ``stage``: whose feature maps and filters to draw
    (all when None); ``cam_stage``: where a stage-taking attribution looks; ``method`` None: the
    run's measured default (``default_method``)."""
    from convlens.inspect import activations, conv_filters, receptive_fields
    from convlens.inspect.analyses import explanation_attribution
    from convlens.views import plots
    from convlens.views.tables import stage_rows

    model, class_names = run.model, run.class_names
    result = activations(model, pixels)
    shown = plots.input_picture(pixels, f"input: {Path(str(image)).name}")
    files = [plots.save_png(shown, out_dir / "input.png")]
    for output in result.stages:
        if output.output.ndim == 3 and (stage is None or output.name == stage):
            files.append(
                plots.save_png(
                    plots.feature_maps([(output.name, output.kind, output.output)]),
                    out_dir / f"stage-{output.name}.png",
                )
            )
    for filters in (
        conv_filters(model)
        if stage is None
        else [f for f in conv_filters(model) if f.stage == stage or f.stage.startswith(stage + ".")]
    ):
        files.append(
            plots.save_png(
                plots.filters(filters.weight, filters.stage), out_dir / f"filters-{filters.stage}.png"
            )
        )
    probabilities = plots.class_probabilities(result.probabilities, class_names)
    files.append(plots.save_png(probabilities, out_dir / "probabilities.png"))
    # None: no Grad-CAM here; with the run, the map carries its verdict on this run and this image
    # (and, when no method was named, the measured choice and why, under faithfulness["default"])
    if measuring_note(run, method):
        with StepProgress("faithfulness") as bar:
            attribution = explanation_attribution(
                model, pixels, method, target, cam_stage, run=run, progress=bar
            )
    else:
        attribution = explanation_attribution(model, pixels, method, target, cam_stage, run=run)
    if attribution is not None:
        figure = plots.attribution_map(pixels, attribution, class_names[attribution.target])
        file_name = (
            "gradcam.png" if attribution.method == "grad-cam" else f"attribution-{attribution.method}.png"
        )
        files.append(plots.save_png(figure, out_dir / file_name))
    predicted = int(result.probabilities.argmax())
    faithfulness = None if attribution is None else dict(attribution.faithfulness or {})
    chosen = None if faithfulness is None else faithfulness.pop("default", None)
    return {
        "prediction": {
            "class": class_names[predicted],
            "index": predicted,
            "probability": float(result.probabilities[predicted]),
        },
        "probabilities": {name: float(p) for name, p in zip(class_names, result.probabilities, strict=True)},
        "attribution": None
        if attribution is None
        else {
            "method": attribution.method,
            "stage": attribution.stage,  # where the map came from (never --stage's feature maps)
            "target": attribution.target,
            "chosen_by": "measurement" if method is None else "--method",
            "default": significant(chosen),  # the run's measured default and why (None with --method)
            "faithfulness": significant(faithfulness),  # float32 AUCs: 6 digits mean something
        },
        "grad_cam": None
        if attribution is None or attribution.method != "grad-cam"
        else {"stage": attribution.stage, "target": attribution.target},
        "stages": stage_rows(receptive_fields(model)),
        "files": [str(p) for p in files],
    }


def print_explanation(summary: dict, model) -> None:
    """The stage table, the prediction, which map was drawn and why, and its verdict."""
    from convlens.inspect import receptive_fields
    from convlens.views.tables import stage_table

    print_tables([stage_table(receptive_fields(model))])
    p = summary["prediction"]
    out.print(f"prediction: [bold]{p['class']}[/] ({100 * p['probability']:.1f} %)")
    shown = summary["attribution"]
    if shown is not None:
        label = shown["method"] + (f" at {shown['stage']}" if shown["stage"] else "")
        if shown.get("default"):
            out.print(f"attribution: {label}, {shown['default']['why']}", markup=False, soft_wrap=True)
        if shown.get("faithfulness"):
            from convlens.views.tables import faithfulness_line

            out.print(faithfulness_line(label, shown["faithfulness"]), markup=False, soft_wrap=True)
    out.print(f"wrote {len(summary['files'])} pictures to {Path(summary['files'][0]).parent}")
