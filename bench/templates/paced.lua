-- wrk: each connection waits BENCH_DELAY_MS between requests, so the offered rate is
-- about connections * 1000 / delay requests/s (open enough to stay below saturation).
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "10")
delay = function()
  return delay_ms
end
