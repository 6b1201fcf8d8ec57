"""The report's "Important channels" section: per convolution stage, the channels whose removal
hurts the prediction most, each with its kernel, its unit optimum, its top test patches and the
ablation number (the explorer's neuron panel, four channels at a time).

Channels are ranked on the report's test images by ``channel_ablations``: the mean change of
each image's predicted-class probability when the channel's map is zeroed. Only the stages
that are (or end in) a convolution are ranked: zeroing a channel after its ReLU or pooling
removes the same signal again, so those stages would repeat the convolution's rows.
"""

from __future__ import annotations

from convlens.report.parts import Section, figure_image, table_dict
from convlens.run import Run

IMPORTANT = 4  # channels shown per stage
SAMPLE = 200  # test images the channels are ranked and their patches found on (the seeded order's first)
MAX_RANKED = 64  # channels ablated per stage: a wider stage is ranked on its first 64
OPTIMUM_STEPS = 48  # each search starts from the best test image, so a short one still beats it
# The panel's regularised channel visualization is left out here: even batched per stage (4
# channels at once), its 256 steps took longer than the rest of this section on a digits run;
# `convlens neuron` and the explorer show it.

__all__ = ["IMPORTANT", "SAMPLE", "important_channels"]


def important_channels(run: Run, images, labels) -> Section:
    """The section: one figure and one table row per shown channel of each convolution stage."""
    from convlens.inspect import find_stage, is_spatial_stage
    from convlens.inspect.neuron_effects import channel_ablations
    from convlens.inspect.neuron_patches import stage_peaks
    from convlens.inspect.neurons import neuron, neuron_stages
    from convlens.views.neuron_record import ablation_table
    from convlens.views.plots.neurons import neuron_rows

    model = run.model
    images, labels = images[:SAMPLE], labels[:SAMPLE]
    stages = [stage for stage in neuron_stages(model) if is_spatial_stage(find_stage(model, stage))]
    section = Section("neurons", "Important channels")
    shown = []
    for stage in stages:
        peaks = stage_peaks(model, images, stage)
        ranked = list(range(min(peaks.values.shape[1], MAX_RANKED)))
        effects = channel_ablations(model, stage, ranked, images, labels)
        chosen = sorted(ranked, key=lambda channel: effects[channel].mean_change)[:IMPORTANT]
        found = [
            neuron(
                model,
                stage,
                c,
                images[0],
                images,
                labels,
                peaks=peaks,
                optimum=True,
                optimum_steps=OPTIMUM_STEPS,
            )
            for c in chosen
        ]
        section.images.append(
            figure_image(
                neuron_rows(found, run.class_names, labels),
                f"the {len(found)} most important channels of {stage}",
                f"{stage}: kernel, what its centre unit responds to most, and the test patches that excite it most",
            )
        )
        shown.extend(found)
    section.tables.append(table_dict(ablation_table(shown)))
    section.text = (
        f"For each convolution stage, the {IMPORTANT} channels whose map, set to zero, lowers the "
        f"predicted class's probability most on {images.shape[0]} test images (mean change in "
        "percentage points; accuracy before → after; how many predictions change). Each row shows "
        "the channel's kernel, the input its centre unit responds to most (cropped to its receptive "
        "field), and the test images whose strongest cell of the channel is highest, cropped to that "
        "cell's receptive field. `convlens neuron RUN --stage S --channel C` shows one in full, with "
        "the regularised visualization of the whole channel."
    )
    return section
