"""The Lua of the scheduler (`records.scheduler`), each script with what its KEYS and ARGV are.

Every script that places jobs shares `_PLACE`: `place` puts a job in its user's waiting set (a
user back from idle gets its pass there) and `wanted` tells a job whose task still waits at its
attempt from one queued twice or left behind.
"""

_PLACE = """
local users, passes, vtime, pending, since, backlog, joined =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local pfx, aging, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function place(job, uid, level, t)
  local wait = pfx .. uid .. '}:waiting'
  if redis.call('EXISTS', wait) == 0 then
    local pass = tonumber(redis.call('HGET', passes, uid) or '')
    if pass == nil or redis.call('ZCOUNT', pfx .. uid .. '}:running', now, '+inf') == 0 then
      -- back from idle: just ahead of the smallest pass of the users waiting when that user has
      -- had a slot since it came (else just behind it), at the pass of the job started last
      -- when nobody waits; or at its own pass when that is further: a debt is kept, not a credit
      local low = redis.call('ZRANGE', backlog, 0, 0, 'WITHSCORES')
      local floor = tonumber(redis.call('GET', vtime) or '0')
      if low[1] then
        floor = tonumber(low[2])
        if tonumber(redis.call('HGET', joined, low[1]) or '') == floor then
          floor = floor + 1  -- that user has had no slot yet: first come, first served
        else
          floor = floor - 1
        end
      end
      if pass == nil or pass < floor then pass = floor end
      redis.call('HSET', passes, uid, string.format('%.0f', pass))
      redis.call('HSET', joined, uid, string.format('%.0f', pass))
      redis.call('HSET', since, uid, string.format('%.0f', now))
    end
    redis.call('ZADD', backlog, pass, uid)
  end
  local e = t - level * aging
  redis.call('ZADD', wait, e, job)
  redis.call('ZADD', users, 'LT', e, uid)
end
-- a job `<task id>-<attempt>` is for a task waiting at that attempt (or one Kiln has no record
-- of): a job queued again by a pipeline redis-py re-sent, or left by a cancel, is not
local function wanted(job, task_prefix)
  local tid, attempt = string.match(job, '^(.+)-(%d+)$')
  if not tid then return true end
  local f = redis.call('HMGET', task_prefix .. tid, 'state', 'attempt')
  if not f[1] then return true end
  return (f[1] == 'PENDING' or f[1] == 'RETRY') and tonumber(f[2]) == tonumber(attempt)
end
"""

SCHEDULE_SCRIPT = _PLACE + """
local delayed = KEYS[8]
for i = 5, #ARGV, 4 do
  local job, uid, level, due = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  if wanted(job, ARGV[4]) then
    redis.call('HSET', pending, job, uid .. ' ' .. level)
    if due > now then
      redis.call('ZADD', delayed, due, job)
    else
      place(job, uid, level, due)
    end
  end
end
return 1
"""
"""Queue jobs. KEYS: users, passes, vtime, pending, since, backlog, joined, delayed. ARGV: the
user key prefix, aging (ms), now (ms), then (job, user id, level, due ms) for each job; a job due
later waits in `delayed`."""

ADMIT_SCRIPT = _PLACE + """
local delayed, queue, workers, capacity = KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local count, cap, scan, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local worker, slots, heartbeat, user_prefix = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11]
local slack, stride, task_prefix = tonumber(ARGV[13]), tonumber(ARGV[14]), ARGV[15]
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', workers, '-inf', now)) do
  redis.call('HDEL', capacity, gone)
end
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now)
if worker ~= '' then
  redis.call('ZADD', workers, now + heartbeat, worker)
  redis.call('HSET', capacity, worker, slots)
end
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[12])
for i = 1, #due, 2 do
  redis.call('ZREM', delayed, due[i])
  local meta = redis.call('HGET', pending, due[i])
  if meta and not wanted(due[i], task_prefix) then
    redis.call('HDEL', pending, due[i])
  elseif meta then
    local uid, level = string.match(meta, '^(%S+) (%d)$')
    place(due[i], uid, tonumber(level), tonumber(due[i + 1]))
  end
end
local running = {}
local function running_of(uid)
  if running[uid] == nil then
    local key = pfx .. uid .. '}:running'
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    running[uid] = redis.call('ZCARD', key)
  end
  return running[uid]
end
local admitted = {}
local function level_of(e)
  return math.max(0, math.min(2, math.floor((now - e) / aging + slack)))
end
while #admitted < count do
  local first = redis.call('ZRANGE', users, 0, 0, 'WITHSCORES')
  if #first == 0 then break end
  -- the highest level any waiting job stands at (levels fall as effective times grow)
  local top = level_of(tonumber(first[2]))
  -- users in (pass, id) order: the first at the top level and under the cap wins, so the walk
  -- usually reads one user (USERS_SCAN at most); failing that, the first at the highest level
  local best, best_level, best_pass
  local offset = 0
  while offset < scan and best_level ~= top do
    local chunk = redis.call('ZRANGE', backlog, offset, offset + 63, 'WITHSCORES')
    if #chunk == 0 then break end
    for i = 1, #chunk, 2 do
      local uid, pass = chunk[i], tonumber(chunk[i + 1])
      local e = tonumber(redis.call('ZSCORE', users, uid) or '')
      if e and (cap <= 0 or running_of(uid) < cap) then
        local level = level_of(e)
        if best == nil or level > best_level then
          best, best_level, best_pass = uid, level, pass
          if level == top then break end
        end
      end
    end
    offset = offset + 64
  end
  if best == nil then break end
  local wait = pfx .. best .. '}:waiting'
  local job = redis.call('ZPOPMIN', wait)[1]
  redis.call('HDEL', pending, job)
  local after = string.format('%.0f', best_pass)
  if wanted(job, task_prefix) then
    redis.call('ZADD', queue, now, job)
    local taken = running_of(best)
    redis.call('ZADD', pfx .. best .. '}:running', now + grace, job)
    running[best] = taken + 1
    local weight = tonumber(redis.call('HGET', user_prefix .. best, 'weight') or '1') or 1
    if weight <= 0 then weight = 1 end
    after = string.format('%.0f', best_pass + math.max(1, math.floor(stride / weight + 0.5)))
    redis.call('SET', vtime, string.format('%.0f', best_pass))
    redis.call('HSET', passes, best, after)
    admitted[#admitted + 1] = job
  end
  local head = redis.call('ZRANGE', wait, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', users, best)
    redis.call('ZREM', backlog, best)
  else
    redis.call('ZADD', users, head[2], best)
    redis.call('ZADD', backlog, after, best)
  end
end
local total = 0
for _, n in ipairs(redis.call('HVALS', capacity)) do total = total + tonumber(n) end
return {admitted, total}
"""
"""Admit up to `count` jobs into arq's queue. KEYS: users, passes, vtime, pending, since, delayed,
arq's queue, workers, capacity. ARGV: the user key prefix, aging (ms), now (ms), count, the per-
user cap (0: none), `USERS_SCAN`, the admitted job's first lease (ms), this worker's id and slots
(its heartbeat; '' for none), how long the heartbeat lasts (ms), the user hash prefix (weights),
`DELAYED_BATCH`, `LEVEL_SLACK`, `STRIDE`, the task key prefix. A job whose task no longer waits
at its attempt is dropped, not admitted. Returns {job ids admitted, the slots of every live
worker}."""

UNSCHEDULE_SCRIPT = """
local users, pending, delayed, wait, backlog = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job, uid = ARGV[1], ARGV[2]
local removed = redis.call('HDEL', pending, job)
redis.call('ZREM', delayed, job)
if redis.call('ZREM', wait, job) == 1 then
  local head = redis.call('ZRANGE', wait, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', users, uid)
    redis.call('ZREM', backlog, uid)
  else
    redis.call('ZADD', users, head[2], uid)
  end
end
return removed
"""
"""Take a job that has not been admitted out of the scheduler. KEYS: users, pending, delayed, the
user's waiting set, backlog. ARGV: job, user id. Returns 1 when it was waiting or delayed."""

STANDING_SCRIPT = """
local users, passes, vtime, pending, delayed, queue, capacity, durations, since =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local pfx, scan, b2, b1, uid, progress, user_prefix =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local others = {}
local heads = redis.call('ZRANGE', users, 0, scan - 1, 'WITHSCORES')
for i = 1, #heads, 2 do
  local v = heads[i]
  if v ~= uid then
    local wait = pfx .. v .. '}:waiting'
    others[#others + 1] = {v, heads[i + 1], redis.call('HGET', passes, v) or '0',
      redis.call('HGET', user_prefix .. v, 'weight') or '1',
      redis.call('ZCOUNT', wait, '-inf', b2), redis.call('ZCOUNT', wait, '-inf', b1),
      redis.call('ZCARD', wait), redis.call('HGET', since, v) or '0'}
  end
end
local wait = pfx .. uid .. '}:waiting'
local mine = {}
for n = 8, #ARGV do
  local job = ARGV[n]
  local e = redis.call('ZSCORE', wait, job)
  local rank = e and redis.call('ZRANK', wait, job) or -1
  local admitted = 0
  if not e and redis.call('ZSCORE', queue, job) and
      redis.call('EXISTS', progress .. job) == 0 then admitted = 1 end
  mine[#mine + 1] = {e or '', rank, admitted, redis.call('ZSCORE', delayed, job) or ''}
end
local total = 0
for _, n in ipairs(redis.call('HVALS', capacity)) do total = total + tonumber(n) end
return {others, mine, redis.call('HGET', passes, uid) or '0',
  redis.call('HGET', user_prefix .. uid, 'weight') or '1',
  redis.call('HLEN', pending) - redis.call('ZCARD', delayed), total,
  redis.call('HGETALL', durations), redis.call('HGET', since, uid) or '0'}
"""
"""What positions are computed from, in one read. KEYS: users, passes, vtime, pending, delayed,
arq's queue, capacity, durations, since. ARGV: the user key prefix, `USERS_SCAN`, the effective
times at or below which a job is high (b2) and at least default (b1), the user, arq's in-progress
key prefix, the user hash prefix, then the user's job ids."""

DURATION_SCRIPT = """
for _, field in ipairs({ARGV[1], '*'}) do
  local old = tonumber(redis.call('HGET', KEYS[1], field) or '')
  local new = tonumber(ARGV[2])
  if old then new = old + tonumber(ARGV[3]) * (new - old) end
  redis.call('HSET', KEYS[1], field, tostring(new))
end
return 1
"""
