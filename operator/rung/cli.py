"""The `rung` command line.

Every input is checked before anything is written: a bad manifest, algorithm setting,
trial command or results folder ends with one `error: <field>: <problem>; <fix>` line on
stderr and exit code 2, and leaves an existing results folder exactly as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from rung import __version__
from rung.api import ArchitectureSearch, Study, load_manifest, load_study
from rung.errors import InputError

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, like every other input error
        raise InputError(self.prog, message, f"see {self.prog} --help")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rung", description="AutoML studies (ASHA, BOHB, Hyperband, ...) on Kubernetes "
                                         "or on one machine.")
    p.add_argument("--version", action="version", version=f"rung {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a Study or an ArchitectureSearch locally, or resume it")
    run.add_argument("study", metavar="STUDY.yaml")
    run.add_argument("--parallel", type=_positive, metavar="N",
                     help="trials at once (default: spec.limits.parallelism)")
    run.add_argument("--results", metavar="DIR", help="results folder (default: .rung/<study name>)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--retry-failed", action="store_true",
                     help="run the failed trials of an earlier run again (e.g. after fixing the trial code); "
                          "finished trials are kept")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a manifest and its algorithm settings")
    val.add_argument("file", metavar="FILE")
    val.set_defaults(func=cmd_validate)

    rep = sub.add_parser("report", help="summary table and PNG plots of a Study's results",
                         description="Summary table, top trials and PNG plots of a Study: from its results "
                                     "folder (rung run), or from the cluster with study/NAME (its Study and "
                                     "Trial objects, read through the kubeconfig).")
    rep.add_argument("target", metavar="STUDY.yaml|RESULTS_DIR|study/NAME",
                     help="a manifest (its results in .rung/<study>), a results folder, or study/NAME on the "
                          "cluster (a path that exists here wins)")
    rep.add_argument("--namespace", "-n", metavar="NS",
                     help="with study/NAME: the Study's namespace (default: the kubeconfig context's, else default)")
    rep.add_argument("--out", metavar="DIR",
                     help="where the PNGs go (default: <results>/plots; ./<study>-plots for study/NAME)")
    rep.set_defaults(func=cmd_report)

    op = sub.add_parser("operator", help="run the Kubernetes operator (kopf) with the current kubeconfig")
    op.add_argument("--namespace", action="append", metavar="NS",
                    help="watch only this namespace (repeatable; default: all namespaces)")
    op.add_argument("--trial-image", default=os.environ.get("RUNG_TRIAL_IMAGE", f"rung-trial:{__version__}"),
                    help="image for Studies that leave spec.trial.image out (env RUNG_TRIAL_IMAGE; "
                         "default: %(default)s)")
    op.add_argument("--checkpoint-root", default=os.environ.get("RUNG_CHECKPOINT_ROOT", DEFAULT_CLUSTER_CHECKPOINTS),
                    help="checkpoints for Studies that leave spec.checkpoints.uri out (default: %(default)s, "
                         "a hostPath: one-node clusters only)")
    op.add_argument("--checkpoint-secret", metavar="NAME",
                    help="Secret (in each Study's namespace) with the credentials of --checkpoint-root, for "
                         "Studies that use it")
    op.add_argument("--gpu-resource", default="nvidia.com/gpu",
                    help="extended resource trial pods request for spec.trial.gpus (default: %(default)s)")
    op.add_argument("--keep-finished-pods", type=_count, default=200, metavar="N",
                    help="finished trial pods each Study keeps for their logs, the newest; older ones are "
                         "deleted once their results are in the Trials (default: %(default)s)")
    op.add_argument("--allow-privileged", action="store_true", help="let Studies run privileged trial containers")
    op.add_argument("--allow-host-network", action="store_true", help="let Studies put trial pods on the node's network")
    op.add_argument("--allow-host-path", action="store_true",
                    help="let Studies put file:// checkpoints outside --checkpoint-root (a node path they choose)")
    op.add_argument("--secret-label", default="rung.dev/credentials=true", metavar="KEY=VALUE",
                    help="label a Secret needs before a Study may use it as spec.checkpoints.secretRef "
                         "('-': any Secret of the Study's namespace; default: %(default)s)")
    op.add_argument("--interval", type=float, default=1.0,
                    help="seconds between steps of a Study that waits on something (a hold, live reports), and "
                         "at least between status writes that only update its progress (counts, best)")
    op.add_argument("--workers", type=_positive, default=16, help="Studies stepped at once (default: %(default)s)")
    op.add_argument("--api-concurrency", type=_positive, default=32,
                    help="API calls one Study step makes side by side: Trial writes, pod creations "
                         "(default: %(default)s)")
    op.add_argument("--lease-namespace", metavar="NS",
                    help="namespace of the leader-election Lease (default: $POD_NAMESPACE, else the first "
                         "--namespace, else default)")
    op.add_argument("--lease-name", default="rung-operator", help="name of the Lease (default: %(default)s)")
    op.add_argument("--identity", help="this replica's name in the Lease (default: $POD_NAME, else host and pid)")
    op.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                    help="log level (default: %(default)s)")
    op.add_argument("--verbose", action="store_true", help="the same as --log-level debug")
    op.add_argument("--metrics-port", type=int, default=8080, metavar="PORT",
                    help="serve /metrics (Prometheus), /healthz and /readyz on this port (default: %(default)s; "
                         "0 turns it off)")
    op.set_defaults(func=cmd_operator)

    # Its own parser (rung.meta_features_cli) reads the arguments: main() hands them over.
    sub.add_parser("meta-features", add_help=False,
                   help="a dataset's meta-features (size, classes, landmarkers) for spec.task.metaFeatures")

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions (YAML), or write them to a folder")
    crds.add_argument("--write", metavar="DIR", help="write one file per kind into DIR (e.g. crds/)")
    crds.set_defaults(func=cmd_crds)
    return p


def _positive(text: str) -> int:
    return _whole(text, 1)


def _count(text: str) -> int:
    return _whole(text, 0)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {least}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["meta-features"]:
        from rung import meta_features_cli
        return meta_features_cli.main(argv[1:])
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:  # `rung report ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# ---- run -------------------------------------------------------------------------------

def default_results(study: Study | ArchitectureSearch) -> Path:
    return Path.cwd() / ".rung" / study.name


def cmd_run(args) -> int:
    from rung import archsearch_results
    from rung.progress import Progress, progress_line
    from rung.report import format_failed, format_table, summarize
    from rung.runtime.local import LocalRuntime
    from rung.runtime.folder import FolderRecords, check_folder, locked
    from rung.runtime.loop import HOLD_STORE, StudyLoop, StudyState, retry_failed
    from rung.storage import StoreGate, open_store, study_prefix
    from rung.warm_priors import folder_loader, priors_for

    manifest = Path(args.study)
    study, search = load_runnable(manifest)
    cwd = check_study(study, manifest)
    results = (Path(args.results) if args.results else default_results(study)).resolve()
    check_folder(results, study)
    priors = priors_for(study, folder_loader(Path.cwd()),   # spec.warmStart: earlier results folders
                        lambda name, line: print(f"warm start from {name}: {line}", file=sys.stderr))

    with locked(results):
        check_folder(results, study)   # again, now that no other `rung run` can write it
        records = FolderRecords.create(results, study)
        if search is not None:
            archsearch_results.mark(results, search)
        if args.retry_failed:
            print(f"retrying {retry_failed(records)} failed trials", file=sys.stderr)
        root = study.spec.checkpoints.uri or (results / "checkpoints").as_uri()
        # The gate probes the store (write, read back, delete) before the first trial starts and
        # again after a store fault: a broken store stops the run with one line (below).
        gate = StoreGate(lambda: open_store(root), study_prefix(study.metadata.namespace, study.name, records.run_id))
        runtime = LocalRuntime(results, cwd)
        loop = StudyLoop(study, runtime, records, parallelism=args.parallel, run_id=records.run_id,
                         checkpoint_root=root, gate=gate, priors=priors)
        progress = Progress(quiet=args.quiet)
        stop = threading.Event()

        def show(lp: StudyLoop) -> None:
            progress.update(progress_line(summarize(study, list(lp.trials.values()), _status(lp))))

        with _stop_on_signals(stop):
            try:   # a store fault mid-run stops the Study cleanly, resumable once the store is fixed
                state = loop.run(on_step=None if args.quiet else show, sleep=stop.wait,
                                 should_stop=lambda: stop.is_set() or HOLD_STORE in loop.holds)
            except KeyboardInterrupt:   # a second Ctrl-C: records stay as they are, resumable
                state = StudyState.INTERRUPTED
            finally:
                runtime.close()
                progress.close()
    summary = summarize(study, records.load(), records.load_status())
    print(format_table(summary))
    if failed := format_failed(summary):
        print(failed)
    finished = state == StudyState.SUCCEEDED   # a search's genotype is the one it ended with
    if search is not None and finished and archsearch_results.export(results, study, records.run_id, root,
                                                                     loop.elapsed()):
        print("\n".join(archsearch_results.summary_lines(results)))
    if held := loop.holds.get(HOLD_STORE):
        print(f"stopped: {held['message']}; then run the same command again to resume ({results})",
              file=sys.stderr)
        return EXIT_FAILED
    if state == StudyState.INTERRUPTED:
        print(f"interrupted: run the same command again to resume ({results})", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"results: {results}  (plots: rung report {results})")
    if state == StudyState.FAILED:   # the same command would only replay this: say how to go on
        print("failed; to run the failed trials again and keep the finished ones: "
              f"rung run {args.study} --retry-failed" + (f" --results {args.results}" if args.results else ""),
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def load_runnable(manifest: Path) -> tuple[Study, ArchitectureSearch | None]:
    """The Study a manifest runs: itself, or the one-trial Study of an ArchitectureSearch
    (rung.archsearch), whose trial needs torch here."""
    runnable = load_manifest(manifest)
    if not isinstance(runnable, ArchitectureSearch):
        return runnable, None
    from rung.archsearch import to_study

    import rung.nas  # noqa: F401 (without torch: one line naming the install)
    return to_study(runnable), runnable


def check_study(study: Study, manifest: Path) -> Path:
    """What `rung validate` and `rung run` both check beyond the manifest itself, before
    anything is written: the algorithm settings, that the trial command can start here,
    and that this build can write the checkpoint store. Returns the trials' working folder
    (the manifest's)."""
    from rung.runtime.local import check_command
    from rung.schedulers import make_scheduler
    from rung.storage import open_store

    make_scheduler(study)
    cwd = manifest.resolve().parent
    check_command(study.spec.trial.command, cwd, study.spec.trial.env)
    if study.spec.checkpoints.uri:
        open_store(study.spec.checkpoints.uri)
    return cwd


def _status(loop) -> dict:
    return {"state": loop.state, "reason": loop.reason, "elapsed": loop.elapsed()}


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    """First Ctrl-C or SIGTERM: stop cleanly (children stopped, records resumable).
    A second Ctrl-C interrupts at once; the finally blocks still stop the children."""
    def first(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    saved = {s: signal.signal(s, first) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


# ---- validate, report --------------------------------------------------------------------

def cmd_validate(args) -> int:
    study, search = load_runnable(Path(args.file))
    check_study(study, Path(args.file))
    spec = study.spec
    if search is not None:
        print(f"ok: {args.file}: ArchitectureSearch {search.name}, {search.spec.method}, "
              f"up to {search.spec.epochs} search epochs")
        return EXIT_OK
    print(f"ok: {args.file}: Study {study.name}, algorithm {spec.algorithm.name}, "
          f"{len(spec.search_space)} parameters, up to {spec.limits.max_trials} trials")
    return EXIT_OK


def cmd_report(args) -> int:
    from rung import archsearch_results
    from rung.report import format_failed, format_lineage, format_table, format_top, summarize, write_plots
    from rung.runtime.folder import FolderRecords

    target = Path(args.target)
    nas_plots: list[Path] = []
    if args.target.startswith("study/") and not target.exists():
        from rung.kube.records import connect, current_namespace, read_study

        name = args.target.removeprefix("study/")
        if not name or "/" in name:
            raise InputError(args.target, "is not a Study's name", "write study/NAME (kubectl get studies)")
        study, trials, status = read_study(connect(), args.namespace or current_namespace(), name)
        summary = summarize(study, trials, status)
        out = Path(args.out) if args.out else Path.cwd() / f"{name}-plots"
    else:
        if args.namespace:
            raise InputError("--namespace", "applies only to study/NAME", "leave it out for a local Study")
        results = target if target.is_dir() else default_results(load_manifest(target))
        records = FolderRecords(results)
        summary = summarize(records.study(), records.load(), records.load_status())
        out = Path(args.out) if args.out else results / "plots"
        if archsearch_results.is_search(results):   # a search's own pictures, before the Study's
            for line in archsearch_results.summary_lines(results):
                print(line)
            nas_plots = archsearch_results.write_plots(results, out)
    print(format_table(summary))
    print()
    print(format_top(summary))
    for more in (format_lineage(summary), format_failed(summary)):
        if more:
            print()
            print(more)
    print()
    if summary.best is None:   # empty plots would say nothing; the reason does
        print(f"no plots: {summary.reason or 'no trial has a result yet'}")
        return EXIT_OK
    paths = nas_plots + write_plots(summary, out)
    print("plots: " + ", ".join(str(p) for p in paths))
    return EXIT_OK


# ---- crds --------------------------------------------------------------------------------

def cmd_crds(args) -> int:
    from rung.api import crd

    if args.write is None:
        sys.stdout.write(crd.render_all())
        return EXIT_OK
    try:
        paths = crd.write(args.write)
    except OSError as e:
        raise InputError(args.write, f"cannot write the CRDs ({e.strerror})", "give a folder you can write to")
    for path in paths:
        print(f"wrote {path}")
    return EXIT_OK


# ---- operator ----------------------------------------------------------------------------

DEFAULT_CLUSTER_CHECKPOINTS = "file:///var/lib/rung/checkpoints"


def share_checkpoint_root(root: str) -> None:
    """A file:// root that this process can see (an operator on the node itself) is made
    writable by the non-root trial pods that mount it; elsewhere the node's admin does it."""
    if not root.startswith("file://"):
        return
    local = Path(root[len("file://"):])
    with contextlib.suppress(OSError):
        local.mkdir(parents=True, exist_ok=True)
        local.chmod(0o1777)   # sticky, like /tmp: trials of all Studies share it, none removes another's


def cmd_operator(args) -> int:
    import logging

    import kopf

    from rung.controller import handlers  # noqa: F401 (registers the handlers with kopf)
    from rung.controller import metrics
    from rung.controller.leader import LeaderElection
    from rung.controller.policy import StudyPolicy, parse_label
    from rung.controller.study import OperatorConfig
    from rung.kube.api import Kube, api_client

    if not 0 <= args.metrics_port <= 65535:
        raise InputError("--metrics-port", f"{args.metrics_port} is not a port", "give 1 to 65535, or 0 for none")
    logging.basicConfig(level="DEBUG" if args.verbose else args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespaces = tuple(args.namespace or ())
    policy = StudyPolicy(args.allow_privileged, args.allow_host_network, args.allow_host_path,
                         parse_label(args.secret_label))
    config = OperatorConfig(args.trial_image, args.checkpoint_root, namespaces, args.interval, workers=args.workers,
                            checkpoint_secret=args.checkpoint_secret, gpu_resource=args.gpu_resource, policy=policy,
                            api_concurrency=args.api_concurrency, keep_finished_pods=args.keep_finished_pods)
    share_checkpoint_root(args.checkpoint_root)
    lease_namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE") or (namespaces or ("default",))[0]
    election = LeaderElection(Kube(api_client(), on_request=metrics.api_request), lease_namespace, args.lease_name,
                              identity=args.identity or os.environ.get("POD_NAME"))
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_port)
        except OSError as e:   # e.g. a second replica on this machine: it still works, without the endpoint
            logging.getLogger("rung.operator").error(
                "cannot serve /metrics, /healthz and /readyz on port %d (%s); running without them "
                "(give another --metrics-port, or 0)", args.metrics_port, e.strerror or e)
    stop = threading.Event()
    while not stop.is_set():
        for sig in (signal.SIGINT, signal.SIGTERM):   # while standing by (kopf handles them while it runs)
            signal.signal(sig, lambda *_: stop.set())
        if not election.acquire(stop):
            break
        # Leader: run kopf until the lease is lost (then stand by again) or a signal stops it.
        lost = threading.Event()

        def renew():
            election.keep(lost, stop)
            lost.set()   # the lease is lost, or a signal came before kopf took the signals over: kopf stops
            metrics.PROBES.unwatch(renewer)   # it ended as it should (stopped, or the lease is lost)

        renewer = threading.Thread(target=renew, name="rung-lease-renewer", daemon=True)
        metrics.PROBES.watch(renewer)   # if it dies otherwise, the liveness probe restarts this replica
        renewer.start()
        kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=None,
                 memo=kopf.Memo(config=config, stop_flag=lost), stop_flag=lost)
        if renewer.is_alive() or stop.is_set():   # a signal stopped kopf (through its handler or ours); so do we
            stop.set()
            renewer.join(timeout=10)
            election.release()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
