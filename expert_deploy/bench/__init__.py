"""bench stage: the user simulator, its per-request records, metrics, reports and plots.

Modules: ``workload`` (prompts, cluster shares, input lengths), ``records`` (per-request record
and JSONL), ``clients_http`` / ``clients_grpc`` (one streamed request each, timestamps on
arrival), ``driver`` (worker processes, closed and open loop, warm-up), ``metrics`` (pure
functions), ``report`` (table, JSON, CSV), ``plots`` (PNG, Agg), ``compare``, ``selfcheck``,
``targets`` (URLs from flags or from a deployment's state).
"""
