-- wrk -s benchmarks/wrk_post.lua URL: POST with an empty body (Content-Length: 0), the
-- X-API-Key header from $BENCH_API_KEY when set; at the end, one line
-- "WRK_JSON {...}" (times in microseconds) that benchmarks/pipeline.py reads.
wrk.method = "POST"
wrk.body = ""
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then
   wrk.headers["X-API-Key"] = key
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %.0f, "p99_us": %.0f, '
         .. '"socket_errors": %d, "status_errors": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
