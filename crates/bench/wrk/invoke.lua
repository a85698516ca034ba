-- wrk script: a warm sync invocation of `noop` with a POST body, as gust-bench's own load
-- generator sends it (see BENCHMARKS.md, "wrk"). Point wrk at the server's root URL:
--   wrk -t1 -c64 -d10s -s crates/bench/wrk/invoke.lua http://127.0.0.1:PORT
wrk.method = "POST"
wrk.path = "/v1/functions/noop/invoke"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
