"""The GPU check's three workloads, one per run (tests/gpu/run.sh).

    python3 workloads.py eager|decoder|nccl [--iters N] [--profile TRACE.json] [--result RESULT.json]
    python3 workloads.py libs     (the libcudart files torch's wheels carry, one a line)

eager:   a loop of matmul, softmax and layer norm.
decoder: a small Llama-style decoder built from a `transformers` config with
         random weights; prefill, then greedy decoding with a static KV cache,
         one decode step captured in a `torch.cuda.CUDAGraph` and replayed.
nccl:    a one-rank NCCL all-reduce (torch.distributed, world size 1, a
         file:// store).

With --profile the whole workload runs under torch.profiler (CUPTI) and its
Chrome trace is written there. --result gets the timed loop's wall time and
what the workload counted itself (graph replays). Nothing is downloaded.
"""

import argparse
import inspect
import json
import os
import sys
import tempfile
import time


def eager(torch, iters):
    """matmul -> softmax -> layer norm, `iters` times."""
    dev = torch.device("cuda")
    x = torch.randn(512, 1024, device=dev)
    w = torch.randn(1024, 1024, device=dev)
    norm = torch.nn.LayerNorm(1024, device=dev)
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(iters):
            y = torch.softmax(x @ w, dim=-1)
            x = norm(y)
    torch.cuda.synchronize()
    return {"loop_s": time.perf_counter() - start, "graph_replays": 0}


def static_cache(transformers, config, max_len, dev, dtype):
    """A StaticCache, whichever constructor this transformers has."""
    cls = transformers.StaticCache
    params = inspect.signature(cls.__init__).parameters
    kwargs = {"config": config, "max_cache_len": max_len}
    for name, value in (("max_batch_size", 1), ("batch_size", 1), ("device", dev), ("dtype", dtype)):
        if name in params:
            kwargs[name] = value
    return cls(**kwargs)


def decoder(torch, iters):
    """Prefill 16 tokens, then `iters` greedy decode steps replayed from one
    captured CUDA graph over a static KV cache."""
    import transformers

    dev = torch.device("cuda")
    dtype = torch.float16
    config = transformers.LlamaConfig(
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(dev, dtype).eval()
    max_len = 32 + iters
    cache = static_cache(transformers, config, max_len, dev, dtype)
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=dev)
    with torch.no_grad():
        positions = torch.arange(16, device=dev)
        out = model(input_ids=prompt, past_key_values=cache, cache_position=positions, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        # Static inputs of the captured step: the token and its position.
        static_token = token.clone()
        static_pos = torch.tensor([16], device=dev)

        def step():
            return model(
                input_ids=static_token,
                past_key_values=cache,
                cache_position=static_pos,
                position_ids=static_pos.unsqueeze(0),
                use_cache=True,
            ).logits

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_logits = step()
        except Exception as e:  # noqa: BLE001 - reported, then decoded eagerly
            # This transformers' forward is not capture-safe: say so and
            # still decode (eagerly), so the run has something to compare.
            print(f"workloads.py: capturing the decode step failed: {e!r}", file=sys.stderr)
            return dict(decode_eagerly(torch, step, static_token, static_pos, iters), capture_error=repr(e))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(iters):
            static_pos.fill_(16 + i)
            graph.replay()
            static_token.copy_(static_logits[:, -1:].argmax(-1))
        torch.cuda.synchronize()
    return {"loop_s": time.perf_counter() - start, "graph_replays": iters}


def decode_eagerly(torch, step, token, pos, iters):
    """The decode loop without a graph (when capture failed)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(iters):
        pos.fill_(16 + i)
        token.copy_(step()[:, -1:].argmax(-1))
    torch.cuda.synchronize()
    return {"loop_s": time.perf_counter() - start, "graph_replays": 0}


def nccl(torch, iters):
    """A one-rank all-reduce, `iters` times."""
    import torch.distributed as dist

    store = os.path.join(tempfile.mkdtemp(prefix="gpu-check-"), "store")
    dist.init_process_group("nccl", init_method=f"file://{store}", rank=0, world_size=1)
    t = torch.ones(1 << 20, device="cuda")
    dist.all_reduce(t)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(t)
    torch.cuda.synchronize()
    loop_s = time.perf_counter() - start
    dist.destroy_process_group()
    return {"loop_s": loop_s, "graph_replays": 0}


WORKLOADS = {"eager": eager, "decoder": decoder, "nccl": nccl}


def runtime_libraries():
    """The CUDA runtimes of the NVIDIA wheels beside torch (without importing it)."""
    import glob
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return []
    site = os.path.dirname(os.path.dirname(spec.origin))
    found = glob.glob(os.path.join(site, "nvidia", "*", "lib", "libcudart.so.*"))
    return sorted(p for p in found if os.path.isfile(p))


def run(name, iters, profile):
    import torch

    if not torch.cuda.is_available():
        sys.exit("workloads.py: torch.cuda.is_available() is False: this check needs a GPU")
    body = WORKLOADS[name]
    if not profile:
        return body(torch, iters)
    from torch.profiler import ProfilerActivity, profile as profiler

    with profiler(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        result = body(torch, iters)
        torch.cuda.synchronize()
    prof.export_chrome_trace(profile)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=sorted(WORKLOADS) + ["libs"])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--profile", help="write torch.profiler's Chrome trace here")
    parser.add_argument("--result", help="write the loop time and counts here (JSON)")
    args = parser.parse_args()
    if args.workload == "libs":
        print("\n".join(runtime_libraries()))
        return
    start = time.perf_counter()
    result = run(args.workload, args.iters, args.profile)
    result.update(workload=args.workload, iters=args.iters, total_s=time.perf_counter() - start)
    if args.result:
        with open(args.result, "w", encoding="utf-8") as f:
            json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
