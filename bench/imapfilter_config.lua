-- imapfilter configuration template for the benchmark (imapfilter 2.8).
--
-- The connection comes from the environment, so that one file serves every run:
--   BENCH_IMAP_HOST, BENCH_IMAP_PORT, BENCH_IMAP_USER, BENCH_IMAP_PASSWORD
--   BENCH_RULES_LUA   the rules to run (bench/rules.lua or bench/rules_body.lua)
-- Usage (bench/run.py does this):  imapfilter -c bench/imapfilter_config.lua

options.timeout = 120
options.info = false        -- no per-action chatter on stdout
options.expunge = true      -- expunge right after marking \Deleted (a move really moves:
                            -- later statements must not see the moved messages)
options.create = true       -- create a missing destination mailbox on [TRYCREATE]
options.subscribe = false   -- mailrules does not subscribe either
options.starttls = false    -- plaintext on loopback, as mailrules' `tls: none`

local function env(name)
    local v = os.getenv(name)
    if v == nil or v == '' then error('environment variable ' .. name .. ' is not set', 0) end
    return v
end

account = IMAP {
    server = env('BENCH_IMAP_HOST'),
    port = tonumber(env('BENCH_IMAP_PORT')),
    username = env('BENCH_IMAP_USER'),
    password = env('BENCH_IMAP_PASSWORD'),
}

dofile(env('BENCH_RULES_LUA'))
