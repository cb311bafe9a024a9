"""``mtbench advise``: the task-selection advisor of :mod:`mtbench.advise`, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mtbench.cli.common import DbOpt, OutOpt, choices, console, err_console, writable_store
from mtbench.console import say
from mtbench.defaults import ADVICE_ENCODER, SURROGATE_ENCODER
from mtbench.errors import MtbenchError

if TYPE_CHECKING:
    from mtbench.advise import AdviceRequest
    from mtbench.plugins import Plugins

MainOpt = Annotated[str, typer.Option(help="the main task (code or name)")]
CandidatesOpt = Annotated[str, typer.Option(help="auxiliary task codes to rank, e.g. dDnE")]
EncoderOpt = Annotated[str, typer.Option(help="the encoder you will finally train")]
Proxy = choices("Proxy", ("surrogate", "early-stop", "clean"))  # mtbench.advise.PROXIES (not imported: heavy)
ProxyOpt = Annotated[Proxy, typer.Option(help="how to rank cheaply: surrogate (a small encoder), early-stop (a "
                                         "fraction of the epochs, --budget), clean (clean error, no attack)")]
SurrogateOpt = Annotated[str, typer.Option(help="the small encoder of the surrogate proxy")]
BudgetOpt = Annotated[float, typer.Option(help="early-stop: fraction of the epochs to train")]
BaseOpt = Annotated[Optional[Path], typer.Option(help="grid whose [data], [train] (epochs, batch, seeds...) and "
                                                      "first [[attack]] the advisor uses")]
ValidateOpt = Annotated[bool, typer.Option("--validate", help="also run the full-budget trials of the best and "
                                           "worst candidates and report the correlations over every candidate "
                                           "with a full-budget result")]
ValidateKOpt = Annotated[int, typer.Option(min=0, max=100, help="how many best and worst candidates --validate runs "
                                           "(0: all of them)")]
ValidateAllOpt = Annotated[bool, typer.Option("--validate-all", help="validate every candidate at the full budget "
                                              "(--validate --validate-k 0): r comparable with the paper's")]


def advise(main: MainOpt, candidates: CandidatesOpt, encoder: EncoderOpt = ADVICE_ENCODER,
           proxy: ProxyOpt = Proxy.surrogate, surrogate: SurrogateOpt = SURROGATE_ENCODER, budget: BudgetOpt = 0.25,
           base: BaseOpt = None, validate: ValidateOpt = False, validate_k: ValidateKOpt = 2,
           validate_all: ValidateAllOpt = False, out: OutOpt = Path("results"), db: DbOpt = None) -> None:
    """Rank auxiliary tasks by how robust they make the main task, with a cheap proxy (reuses trials already run)."""
    from mtbench.advise import advise as run_advice
    from mtbench.advise import base_settings
    from mtbench.plugins import get_plugins
    from mtbench.report.advice import advice_sections
    from mtbench.report.frames import load_frames
    from mtbench.report.render import render

    plugins = get_plugins()
    request = _request(plugins, main, candidates, encoder=encoder, proxy=proxy.value, surrogate=surrogate,
                       budget=budget, validate=validate or validate_all, validate_k=0 if validate_all else validate_k)
    store = writable_store(out, db)
    advice = run_advice(request, base_settings(base, plugins), store, out, plugins, err_console)
    render(advice_sections(load_frames(store.url), only=[advice["trial"]]), "table", console)
    say(console, f"advice stored as trial {advice['trial']}; `mtbench report --view advice` shows every advice")


def _request(plugins: Plugins, main: str, candidates: str, **options: Any) -> AdviceRequest:
    """The request with its tasks as codes (``dDnE`` or ``depth_zbuffer,normal``), checked before any work."""
    from mtbench.advise import AdviceRequest

    code = lambda t: plugins.tasks.get(plugins.tasks.resolve(t)).code  # noqa: E731
    request = AdviceRequest(code(main), [code(c) for c in (candidates.split(",") if "," in candidates
                                                            else list(candidates))], **options)
    if not request.candidates or len(set(request.candidates)) != len(request.candidates):
        raise MtbenchError(f"--candidates: expected distinct task codes such as dDnE, got {candidates!r}")
    if request.main in request.candidates:
        raise MtbenchError(f"--candidates: the main task {request.main!r} cannot be its own auxiliary task")
    if not 0 < request.budget <= 1:
        raise MtbenchError(f"--budget: expected a fraction in (0, 1], got {request.budget}")
    for name in {request.encoder, request.surrogate}:
        plugins.encoders.get(name)
    return request
