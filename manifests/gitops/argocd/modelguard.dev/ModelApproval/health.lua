-- Argo CD health of a ModelGuard ModelApproval. The operator writes no status on approvals: its
-- admission webhook refuses, when one is applied, an approval edited after signing, signed with
-- a key other than its approver's or already expired; whether it counts for a model is the
-- ModelDeployment's Approved condition. What changes afterwards is time:
--   Degraded  spec.expiresAt has passed: it no longer approves anything (what it approved keeps
--             serving; a version not yet rolled out needs a new approval)
--   Healthy   otherwise
-- Reading the time needs Lua's string library: with argocd-cm's default (no standard library),
-- expiry is not judged and the message says so; set
-- resource.customizations.useOpenLibs.modelguard.dev_ModelApproval: "true" to judge it.
local hs = {}
local spec = obj.spec or {}
local what = tostring(spec.model) .. " " .. tostring(spec.version) .. " approved by " .. tostring(spec.approver)

local function epoch(text)
  local year, month, day, hour, min, sec = string.match(text, "^(%d%d%d%d)-(%d%d)-(%d%d)[Tt](%d%d):(%d%d):(%d%d)")
  if year == nil then
    return nil
  end
  local offset = 0
  local sign, hours, minutes = string.match(text, "([+-])(%d%d):(%d%d)$")
  if sign ~= nil then
    offset = (tonumber(hours) * 3600 + tonumber(minutes) * 60)
    if sign == "-" then
      offset = -offset
    end
  end
  local os = require("os")
  local fields = {year = tonumber(year), month = tonumber(month), day = tonumber(day), hour = tonumber(hour), min = tonumber(min), sec = tonumber(sec)}
  -- os.time reads a table as local time: add the local offset from UTC, then the text's own.
  local local_offset = os.time() - os.time(os.date("!*t"))
  return os.time(fields) + local_offset - offset
end

if spec.expiresAt == nil then
  hs.status = "Healthy"
  hs.message = what
  return hs
end
if string == nil or string.match == nil then
  hs.status = "Healthy"
  hs.message = what .. " until " .. spec.expiresAt .. " (expiry not judged here: the check runs without Lua's string library)"
  return hs
end
local expires = epoch(spec.expiresAt)
if expires ~= nil and expires <= require("os").time() then
  hs.status = "Degraded"
  hs.message = "Expired at " .. spec.expiresAt .. ": " .. what .. " no longer counts; a version not yet rolled out needs a new approval"
  return hs
end
hs.status = "Healthy"
hs.message = what .. " until " .. spec.expiresAt
return hs
