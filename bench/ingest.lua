-- wrk script for bench/ingest.py: rotate through pre-signed webhook bodies, each request with its
-- own X-GitHub-Delivery id, so every request is a new delivery (a repeated id would be a cheaper
-- duplicate). HMACs are computed once per body by ingest.py; wrk only picks one and counts.
--
-- Environment: BENCH_BODIES   file with one "event signature path" line per body
--              BENCH_RUN      prefix that makes delivery ids unique across runs
--              BENCH_RESULT   where done() writes the summary as JSON

local bodies = {}
local counter = 0
local thread_number = 0
local run = os.getenv("BENCH_RUN") or "run"
local threads = {}

function setup(thread)
    thread:set("thread_number", #threads)
    table.insert(threads, thread)
end

function init(args)
    for line in io.lines(os.getenv("BENCH_BODIES")) do
        local event, signature, path = line:match("^(%S+) (%S+) (%S+)$")
        local file = assert(io.open(path, "rb"))
        local body = file:read("*a")
        file:close()
        table.insert(bodies, { event = event, signature = signature, body = body })
    end
end

function request()
    counter = counter + 1
    local item = bodies[(counter % #bodies) + 1]
    return wrk.format("POST", "/webhook", {
        ["Content-Type"] = "application/json",
        ["X-GitHub-Event"] = item.event,
        ["X-Hub-Signature-256"] = item.signature,
        ["X-GitHub-Delivery"] = string.format("%s-%d-%d", run, thread_number, counter),
    }, item.body)
end

function done(summary, latency, requests)
    local errors = summary.errors
    local file = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
    file:write(string.format(
        '{"requests": %d, "duration_us": %d, "http_errors": %d, "connect_errors": %d, '
            .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, '
            .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
        summary.requests, summary.duration, errors.status, errors.connect, errors.read,
        errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max))
    file:close()
end
