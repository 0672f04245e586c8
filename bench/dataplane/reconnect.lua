-- wrk script: every 10th request of a wrk thread carries `Connection: close`, so the server
-- closes that connection after answering and wrk opens a new one: one new connection (over
-- HTTPS, one TLS handshake) per 10 requests on average. The count is per wrk thread, not per
-- connection (wrk's Lua does not see connections), so a connection serves 10 requests on
-- average, not exactly. Prints the RESULT line of latency.lua.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "latency.lua")

local every = 10
local n = 0
local keep, close

init = function(args)
  keep = wrk.format()
  close = wrk.format(nil, nil, { ["Connection"] = "close" })
end

request = function()
  n = n + 1
  if n % every == 0 then
    return close
  end
  return keep
end
