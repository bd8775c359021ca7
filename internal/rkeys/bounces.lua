-- Counts one bounce or complaint report in the hour's bucket, once per
-- report: a report seen before (same email or provider event, same type)
-- counts nothing.
--
-- KEYS[1] -> the report's dedup key (FeedbackSeen)
-- KEYS[2] -> the hour's bucket (FeedbackBucket)
-- --
-- ARGV[1] -> how long the dedup key lives, ms; "0": no dedup key
-- ARGV[2] -> bucket field "<kind>|<domain>|<type>"
-- ARGV[3] -> how long the bucket lives, s
--
-- Returns 1 when the report was counted, 0 when it had been before.
if ARGV[1] ~= '0' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
