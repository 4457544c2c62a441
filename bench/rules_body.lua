-- Body-regex benchmark for imapfilter: the same rule as bench/rules_body.yaml.
-- match_body fetches BODY.PEEK[TEXT] of every message, one UID FETCH per message, and
-- matches with PCRE on the client.

local inbox = account.INBOX

local r = inbox:match_body('build #[0-9]+ failed')
r:add_flags({ '$BuildFailed' })
r:move_messages(account['CI/failed'])
