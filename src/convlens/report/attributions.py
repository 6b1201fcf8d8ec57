"""The report's "Where the model looks" section: every attribution method on one test image, each with
its verdict on this run and this image, the run's measured default first."""

from __future__ import annotations

from convlens.errors import ConvlensError
from convlens.report.parts import Section
from convlens.report.parts import figure_image as _image
from convlens.report.parts import table_dict as _table
from convlens.run import Run


def attributions_section(run: Run, image, label: int, progress=None) -> Section:
    """Every registered attribution method on one test image: where the model looks, method by method,
    each with its verdict on this run and this image (``run_faithfulness.attribution_faithfulness``);
    the run's default (``method_choice.default_method``) first, with why it was chosen.
    ``progress(done, total, what)``: while the run is measured (the first report of a checkpoint)."""
    from convlens.inspect.attribution import ATTRIBUTIONS
    from convlens.inspect.method_choice import default_method
    from convlens.inspect.run_faithfulness import attribution_faithfulness, image_reference, run_faithfulness
    from convlens.views import plots
    from convlens.views.tables import faithfulness_table

    chosen = default_method(run, progress=progress)
    entries = sorted(ATTRIBUTIONS, key=lambda entry: entry.name != chosen["method"])  # the default first
    maps, failed, verdicts = [], [], []
    for entry in entries:
        stage = chosen["stage"] if entry.name == chosen["method"] else None
        try:
            result = entry.call(run.model, image, target=None, stage=stage)
        except ConvlensError as exc:  # e.g. Grad-CAM on a model without convolutions
            failed.append(f"{entry.label}: {exc}")
            continue
        at = f" at {result.stage}" if result.stage else ""
        maps.append((entry.label + at + (" (default)" if entry.name == chosen["method"] else ""), result))
    note = ""
    try:
        measured = run_faithfulness(run, [result.method for _, result in maps])
        note = (
            f" Beside them, each method's verdict on this run: deletion of its top-ranked pixels ({measured['settings']['fill']} "
            f"fill, {measured['settings']['steps']} steps) against a random order on {measured['settings']['images']} "
            "test images, the model's prediction as target (passes only when the 95 % interval of the difference lies "
            "below 0), and the Spearman correlation with the maps of the fully re-initialized model (passes below 0.5); "
            "and on this image, its deletion against random orders."
        )
    except ConvlensError as exc:
        note = f" Faithfulness not measured: {exc}."
    references = {}
    for label_text, result in maps:
        if result.target not in references:
            references[result.target] = image_reference(run.model, image, result.target)
        result.faithfulness = attribution_faithfulness(
            run, image, result, random_aucs=references[result.target]
        )
        verdicts.append((label_text, result.faithfulness))
    shown = ATTRIBUTIONS.get(chosen["method"]).label + (f" at {chosen['stage']}" if chosen["stage"] else "")
    text = (
        f"A test image of class {run.class_names[label]}, explained for the predicted class by each of the "
        f"{len(ATTRIBUTIONS)} registered attribution methods ({', '.join(e.label for e in ATTRIBUTIONS)}; "
        f"1 = mattered most). The default on this run, first, is {shown}: {chosen['why']}." + note
    )
    if failed:
        text += " Not available: " + "; ".join(failed) + "."
    images = (
        [_image(plots.attribution_grid(image, maps, run.class_names), "attribution maps")] if maps else []
    )
    tables = (
        [_table(faithfulness_table(verdicts, "faithfulness on this run and this image"))] if verdicts else []
    )
    return Section("attributions", "Where the model looks", text=text, tables=tables, images=images)
