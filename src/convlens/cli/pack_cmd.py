"""`convlens pack`: an image folder as tar shards for several machines. The work is in convlens.data.shards."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.app import app
from convlens.cli.render import out, print_json
from convlens.errors import printable


@app.command("pack")
def pack_command(
    folder: Path = typer.Argument(
        ..., help="Image folder: one subfolder per class, optionally under train/ and test/."
    ),
    out_dir: Path = typer.Argument(
        ..., metavar="OUT", help="New (or empty) folder to write the shards into."
    ),
    shard_size: int = typer.Option(
        1000, "--shard-size", metavar="N", help="Images per shard (default 1000)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the test split (without test/) and of the shuffle."),
    as_json: bool = typer.Option(False, "--json", help="Print {out, class_names, shards, samples}."),
) -> None:
    """Pack an image folder into tar shards (the WebDataset layout) to copy to several machines.

    Writes OUT/train-000000.tar, train-000001.tar ... and test-000000.tar ..., each sample a
    KEY.jpg (the file's bytes as they were; .png etc. for other images) and a KEY.cls (its class
    index), plus OUT/classes.txt. Training images are shuffled first, so each shard holds every
    class. `convlens train --data OUT` decodes the shards once per machine into the cache,
    straight from the tar members (nothing unpacked); under torchrun each process reads its
    share of the cache.

    Examples:

      convlens pack photos/ shards/ --shard-size 2000

      torchrun --nnodes 2 --nproc-per-node 4 ... -m convlens train --data shards/
    """
    from convlens.data.shards import pack_folder

    result = pack_folder(folder, out_dir, shard_size=shard_size, seed=seed)
    if as_json:
        return print_json(result.to_json())
    for split in ("train", "test"):
        out.print(
            f"{split}: {result.samples[split]:,} images in {len(result.shards[split])} shard(s)",
            markup=False,
            soft_wrap=True,
        )
    out.print(
        f"wrote {printable(result.out)} ({len(result.class_names)} classes)", markup=False, soft_wrap=True
    )
    return None
