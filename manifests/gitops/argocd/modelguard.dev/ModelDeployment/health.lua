-- Argo CD health of a ModelGuard ModelDeployment, from the conditions the operator writes
-- (docs/status.md). Runs without Lua's standard libraries, as argocd-cm checks do by default.
--   Progressing  the operator has not seen this generation yet; a rollout under way; a version
--                waiting for its approvals; a source it retries (Reconciling=True)
--   Healthy      Ready=True
--   Suspended    quarantined (Ready=False/Quarantined): scaled to zero, its network cut, until
--                the spec changes
--   Degraded     Stalled=True: a refusal that needs someone to change something (untrusted
--                signer, bad signature, missing or unbound policy, broad access refused, ...);
--                or Isolated=False: someone else's NetworkPolicy opens the model's pods
local hs = {}

local function condition(type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, found in ipairs(obj.status.conditions) do
    if found.type == type then
      return found
    end
  end
  return nil
end

local function said(found)
  if found.message == nil or found.message == "" then
    return found.reason
  end
  return found.reason .. ": " .. found.message
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the ModelGuard operator to reconcile the model"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the ModelGuard operator to reconcile generation " .. obj.metadata.generation
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
local isolated = condition("Isolated")

if ready ~= nil and ready.status == "False" and ready.reason == "Quarantined" then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
  return hs
end
if isolated ~= nil and isolated.status == "False" then
  hs.status = "Degraded"
  hs.message = said(isolated)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = said(reconciling)
elseif ready ~= nil then
  hs.message = said(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
