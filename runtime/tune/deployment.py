"""The chosen candidate as a Triton model repository, written and validated with runtime.serve's library.

* onnxruntime: Triton's onnxruntime backend, one instance per stream, each with the stream's
  intra-op threads (``intra_op_thread_count``), on the graph the candidate ran.
* OpenVINO: Triton's OpenVINO backend on the same ONNX graph, ``NUM_STREAMS`` the streams,
  ``INFERENCE_NUM_THREADS`` all the threads, one instance per request in flight.
* TensorRT (CUDA): the onnxruntime backend with its TensorRT accelerator, one instance per stream.

The model's ``max_batch_size`` and preferred batch size are the candidate's batch (Triton never
forms a batch larger than the one measured); the queue delay is 0 at batch 1, else the serve
default, until ``--serve`` searches it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from exporter import artifact as art
from exporter.files import sha256_bytes

from ..bench.engines import graph_key
from ..resolve import Resolved, resolve
from ..serve import ModelOptions, check_repository, default_model_name, write_repository_model
from .deploy import REPOSITORY, BenchSetting, Candidate, Machine, ServedConfig, TritonModel

DEFAULT_QUEUE_DELAY_US = 500


def model_options(c: Candidate, device: str, threads: int, openvino_hint: str | None = None) -> ModelOptions:
    """The Triton settings that run ``c`` as it was measured; ``openvino_hint``: the precision hint its graph
    records (:func:`runtime.openvino_model.hint_for`), ``bf16`` asking the OpenVINO backend for bf16 as well."""
    batch = c.batch_size
    common = dict(
        max_batch=batch,
        preferred_batch_sizes=(batch,),
        max_queue_delay_us=0 if batch == 1 else DEFAULT_QUEUE_DELAY_US,
        warmup=True,
    )
    if c.engine == "openvino":
        return ModelOptions(
            **common,  # type: ignore[arg-type]
            instances=c.concurrency,
            device="cpu",
            backend="openvino",
            threads=threads,
            openvino_streams=c.streams,
            openvino_hint="THROUGHPUT" if c.streams > 1 else "LATENCY",
            bf16=c.precision == "bf16" or openvino_hint == "bf16",
        )
    if c.engine == "tensorrt":
        return ModelOptions(
            **common,  # type: ignore[arg-type]
            instances=c.streams, device="cuda", tensorrt="fp16" if c.precision == "fp16" else "fp32",
        )  # fmt: skip
    return ModelOptions(
        **common,  # type: ignore[arg-type]
        instances=c.streams,
        device="cuda" if device == "cuda" else "cpu",
        threads=c.threads_per_stream or max(1, threads // c.streams),
    )


def caveats(c: Candidate, machine: Machine, openvino_hint: str | None = None) -> list[str]:
    """What Triton's own backend would run differently from what was measured (the local server runs
    as measured), said in the repository's notes and deploy.json; ``openvino_hint`` as for :func:`model_options`."""
    if c.engine == "onnxruntime":
        return [
            "measured with onnxruntime's intra-op spinning off (session.intra_op.allow_spinning=0), as the local "
            "server runs it; Triton's onnxruntime backend has no parameter for it and spins by default"
        ]
    bf16_cpu = machine.cpu_flags.get("amx_bf16") or machine.cpu_flags.get("avx512_bf16")
    if c.engine == "openvino" and c.precision != "bf16" and openvino_hint != "bf16" and bf16_cpu:
        return [
            f"measured with OpenVINO's f32 precision hint (its {c.precision} graph's float parts in f32), as the "
            "local server runs it; Triton's OpenVINO backend has no f32 hint, and on this CPU with bf16 "
            "arithmetic OpenVINO may choose bf16 itself: numerics and speed not measured there"
        ]
    return []


def resolved_graph(c: Candidate, artifact: str, artifacts_dir: Path, rebuild: bool, reference: str | None,
                   say) -> Resolved:  # type: ignore[no-untyped-def]  # fmt: skip
    """The verified graph the candidate's engine reads."""
    key = graph_key(c.engine, c.precision) or "fp32"
    return resolve(
        artifact, key=art.VariantKey.parse(key), artifacts_dir=artifacts_dir, rebuild=rebuild, reference=reference,
        say=say,
    )  # fmt: skip


def write(resolved: Resolved, output: Path, options: ModelOptions, notes: list[str]) -> TritonModel:
    """Write the model into ``output/repository`` (atomically, replacing the model of an earlier run) and
    validate the repository as the server would load it."""
    repository = Path(output) / REPOSITORY
    repository.mkdir(parents=True, exist_ok=True)
    name = default_model_name(resolved.artifact.name, str(resolved.key))
    written = write_repository_model(resolved, repository, options, name, notes)
    checked = {m.name: m for m in check_repository(repository, [name])}
    summary_text = written.config_text
    from ..serve import parse_config, summarize

    s = summarize(parse_config(summary_text))
    return TritonModel(
        repository=str(repository),
        model_name=name,
        backend=s.backend,
        variant=str(resolved.key),
        graph_sha256=written.sha256,
        config_sha256=sha256_bytes(summary_text.encode()),
        max_batch_size=s.max_batch_size,
        preferred_batch_sizes=s.preferred_batch_sizes,
        max_queue_delay_us=s.max_queue_delay_us,
        instances=options.instances,
        parameters=s.parameters,
        validated=checked[name].ok,
    )


def with_batching(options: ModelOptions, instances: int, max_batch: int, preferred: tuple[int, ...],
                  delay_us: int) -> ModelOptions:  # fmt: skip
    """``options`` with another instance count and dynamic batching (the ``--serve`` search's moves).

    onnxruntime keeps its total threads: more instances get fewer threads each.
    """
    threads = options.threads
    if options.backend != "openvino" and threads and options.instances:
        threads = max(1, threads * options.instances // instances)
    return replace(
        options, instances=instances, max_batch=max_batch, preferred_batch_sizes=preferred,
        max_queue_delay_us=delay_us, threads=threads,
    )  # fmt: skip


def candidate_setting(c: Candidate, threads: int) -> BenchSetting:
    """The bench setting ``c`` was measured with (``threads``: all its threads, as the bench gave them)."""
    return BenchSetting(
        engine=c.engine, precision=c.precision, streams=c.streams, threads_per_stream=c.threads_per_stream,
        threads=threads, in_flight=c.concurrency, batch=c.batch_size,
    )  # fmt: skip


def served_batch(formed: float | None, request_batch: int, max_batch: int, graph_batch: int | None) -> int:
    """The batch the server ran, as a batch size the bench can time: ``formed`` (images per execution, the
    load test's mean) to the nearest whole size the served graph takes, no larger than ``max_batch`` (Triton forms
    none larger; 0: no batching, the request batch); ``request_batch`` where ``formed`` was not recorded.

    ``graph_batch``: the graph's fixed batch dimension (None: symbolic, any size)."""
    if graph_batch is not None:
        return graph_batch
    if formed is None or formed <= 0:
        return request_batch
    top = max_batch if max_batch > 0 else request_batch
    return max(1, min(top, int(formed + 0.5)))  # half rounds up (Python's round() would take 12.5 to 12)


def served_setting(c: Candidate, options: ModelOptions, served: ServedConfig, threads: int,
                   graph_batch: int | None = None) -> BenchSetting:  # fmt: skip
    """The bench setting that runs ``options`` as the server ran them in ``served`` (its load test).

    * onnxruntime (and TensorRT): one session per instance, each with the repository's intra-op threads
      (``options.threads``; unset: ``threads`` shared out between the instances, as the local server does);
    * OpenVINO: the one compiled model's ``NUM_STREAMS`` streams on its ``INFERENCE_NUM_THREADS`` threads (unset:
      the candidate's), each instance one infer request;
    * in flight: one request per instance, fewer where the clients bound it (``clients x request batch``
      images in the server make at most that many executions of the formed batch at once);
    * the batch: the server's mean formed batch, rounded (:func:`served_batch`).

    ``threads``: the candidate's threads in all (the bench's, :func:`runtime.tune.triton` ``_threads``).
    """
    request_batch = served.request_batch or c.batch_size
    batch = served_batch(served.mean_formed_batch, request_batch, options.max_batch, graph_batch)
    instances = max(1, options.instances)
    clients = served.concurrency or instances
    in_flight = max(1, min(instances, clients * request_batch // batch))
    if options.backend == "openvino":
        streams = options.openvino_streams or c.streams
        total = options.threads or threads
        per: int | None = max(1, total // streams)
    else:
        streams = instances
        per = options.threads or max(1, threads // instances)
        total = per * instances
        if c.engine == "tensorrt":
            per, total = None, threads
    return BenchSetting(
        engine=c.engine, precision=c.precision, streams=streams, threads_per_stream=per, threads=total,
        in_flight=in_flight, batch=batch, formed_batch=served.mean_formed_batch,
    )  # fmt: skip
