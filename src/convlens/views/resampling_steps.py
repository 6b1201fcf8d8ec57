"""The arithmetic steps of a segmentation decoder's layers: a transposed convolution's stamps and
an upsampling's copied or blended cells (``convlens.inspect.upsampling``), in words and numbers.

``convlens.views.arithmetic`` registers these for their cell classes, so ``explain --at`` and the
explorer's arithmetic panel show them like every other kind.
"""

from __future__ import annotations

from convlens.inspect.upsampling import TransposedConvCell, UpsampleCell
from convlens.views.step_text import Steps, _explain, _grid, channel_total_steps, num, operand


def _listed(positions: list[int]) -> str:
    return ", ".join(str(p) for p in positions)


def transposed_conv_steps(cell: TransposedConvCell, class_names, max_channels) -> Steps:
    """Each input cell stamps the kernel, scaled by its value; this cell adds up the stamps covering it."""
    stride = "×".join(str(s) for s in cell.stride)
    steps = [
        _explain(
            "transposed convolution: each input cell stamps a copy of the kernel, scaled by its value, "
            f"onto the output ({stride} cells apart); this cell adds up the stamps that cover it, plus the bias"
        )
    ]
    if not cell.rows or not cell.cols:
        steps.append(
            _explain(
                f"no stamp covers this cell: the stride ({stride}) leaves gaps the kernel does not reach, "
                "so its value is the bias alone"
            )
        )
        steps.append({"equation": "total = bias =", "value": cell.total, "total": True})
        return steps
    steps.append(
        _explain(
            f"the stamps that cover it come from input rows {_listed(cell.rows)} (kernel rows "
            f"{_listed(cell.kernel_rows)}) and input cols {_listed(cell.cols)} (kernel cols "
            f"{_listed(cell.kernel_cols)}): input row × stride {cell.stride[0]} − padding {cell.padding[0]} "
            f"+ kernel row × dilation {cell.dilation[0]} = row {cell.row}"
        )
    )
    count = len(cell.input_channels)
    shown = count if max_channels is None else min(count, max_channels)
    for k, channel in enumerate(cell.input_channels[:shown]):
        steps.append(
            {
                "heading": f"input channel {channel}: rows {_listed(cell.rows)}, cols {_listed(cell.cols)}",
                "grids": [
                    _grid("input values", cell.inputs[k]),
                    _grid("kernel taps they land with", cell.kernel[k]),
                    _grid("products", cell.products[k]),
                ],
                "ops": ["×", "="],
                "equation": "sum of products =",
                "value": float(cell.channel_sums[k]),
            }
        )
    return steps + channel_total_steps(cell.channel_sums.tolist(), cell.bias, cell.total, shown)


def upsample_steps(cell: UpsampleCell, class_names, max_channels) -> Steps:
    """Nearest: the one input cell copied; bilinear: the cells around the position, weighted."""
    row_at, col_at = cell.positions
    if cell.mode.startswith("nearest"):
        return [
            _explain(
                f"upsample ({cell.mode}): each output cell copies the input cell its position falls in, "
                "channel by channel; nothing is learned"
            ),
            {
                "equation": f"input value at row {cell.rows[0]}, col {cell.cols[0]} =",
                "value": cell.total,
                "total": True,
            },
        ]
    rows = [
        [f"row {r}, col {c}", float(cell.values[i, j]), float(cell.weights[i, j]), float(cell.products[i, j])]
        for i, r in enumerate(cell.rows)
        for j, c in enumerate(cell.cols)
    ]
    corners = "aligned with the input's corner cells" if cell.align_corners else "at the centres of its cells"
    return [
        _explain(
            f"upsample (bilinear, corners {corners}): this cell's position falls at input row {num(row_at)}, "
            f"col {num(col_at)}; it blends the input cells around it, each weighted by how near it is "
            "(row weight × col weight; the weights add up to 1)"
        ),
        {
            "table": {
                "caption": "the input cells blended",
                "columns": ["input cell", "value", "weight", "product"],
                "rows": rows,
                "chosen": None,
            }
        },
        {
            "equation": f"{' + '.join(operand(row[3]) for row in rows)} =",
            "value": cell.total,
            "total": True,
        },
    ]
