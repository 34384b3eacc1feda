"""The ``lumbar-edge`` command line.

Thin by design: each command turns its flags into one library call and prints the result. User
errors (:class:`~lumbar_edge.errors.LumbarEdgeError`) are printed as one line without a traceback
and give exit status 2; ``main(argv)`` returns the exit status instead of exiting, so it can be
called from tests and other programs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from . import __version__
from .errors import LumbarEdgeError

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lumbar-edge")
def cli() -> None:
    """Detect and grade degenerative lumbar spine disease on MRI (RSNA 2024 conditions)."""


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the scan as JSON instead of a table.")
@click.option("--workers", type=int, default=None, help="Header-reading threads (default: CPU count x 4).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def scan(path: Path, as_json: bool, workers: Optional[int], quiet: bool) -> None:
    """Scan PATH (a study folder or a root of many) and list studies, series and skipped files."""
    from .dicom import format_scan, scan_path

    result = scan_path(path, workers=workers, progress=not quiet)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_scan(result))


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the RSNA-layout dataset into (created; must be empty or new).")
@click.option("--studies", "n_studies", type=click.IntRange(1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=None, help="Processes used to render studies (default: CPU count).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def synth(out_dir: Path, n_studies: int, seed: int, workers: Optional[int], quiet: bool) -> None:
    """Write synthetic lumbar-spine MRI studies in the RSNA 2024 layout (demo and test data)."""
    from .synth import synthesize

    summary = synthesize(out_dir, n_studies=n_studies, seed=seed, workers=workers, progress=not quiet)
    click.echo(summary.describe())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="lumbar-edge",
                 standalone_mode=False)
    except LumbarEdgeError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
