-- The 12 benchmark rules for imapfilter; the same rules as bench/rules.yaml, in the same
-- order. Loaded by bench/imapfilter_config.lua, which defines `account`.
--
-- Every statement searches INBOX as it is at that moment (moves are expunged at once:
-- options.expunge), which is what mailrules' in-order, per-message semantics give.
-- A rule with several criteria chains them: the second search is restricted to the UIDs
-- the first one returned.

local inbox = account.INBOX
local r

-- 1. spam
r = inbox:contain_field('X-Spam-Flag', 'YES')
r:move_messages(account['Junk'])

-- 2. announce copy
r = inbox:contain_field('List-Id', 'announce.example.com')
r:copy_messages(account['Archive/Announcements'])

-- 3. announce list
r = inbox:contain_field('List-Id', 'announce.example.com')
r:mark_seen()
r:move_messages(account['Lists/announce'])

-- 4. dev list
r = inbox:contain_field('List-Id', 'dev.lists.example.org')
r:add_flags({ '$Dev' })
r:move_messages(account['Lists/dev'])

-- 5. users list
r = inbox:contain_field('List-Id', 'users.lists.example.net')
r:move_messages(account['Lists/users'])

-- 6. security list
r = inbox:contain_field('List-Id', 'security.lists.example.org')
r:mark_flagged()
r:move_messages(account['Lists/security'])

-- 7. ci failures
r = inbox:contain_field('List-Id', 'ci.example.org'):contain_subject('failed')
r:mark_flagged()
r:add_flags({ '$CIFailed' })

-- 8. ci list
r = inbox:contain_field('List-Id', 'ci.example.org')
r:move_messages(account['Lists/ci'])

-- 9. github notifications
r = inbox:contain_from('notifications@github.com')
r:mark_seen()

-- 10. vendor
r = inbox:contain_from('vendor.example.com')
r:add_flags({ '$Vendor' })

-- 11. big mail (100KB = 102400 bytes, as mailrules counts)
r = inbox:is_larger(102400)
r:mark_flagged()

-- 12. archive old read mail (imapfilter: BEFORE <date 60 days ago>, day-granular; the
-- generated mailbox has no mail between 57 and 63 days old, so this equals OLDER 60d)
r = inbox:is_seen():is_older(60)
r:move_messages(account['Archive'])
