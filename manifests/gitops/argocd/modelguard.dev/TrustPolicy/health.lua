-- Argo CD health of a ModelGuard TrustPolicy. The operator writes no status on policies: its
-- admission webhook refuses, when the policy is applied, keys that do not parse and approvals
-- that cannot be met, so what is stored is in force. Runs without Lua's standard libraries.
--   Suspended  spec.namespaceSelector is unset: the policy binds no namespace yet, and every
--              model naming it is refused (PolicyNotBound)
--   Healthy    otherwise; the message says Audit when violations are admitted and reported
local hs = {}
if obj.spec == nil or obj.spec.namespaceSelector == nil then
  hs.status = "Suspended"
  hs.message = "Binds no namespace: spec.namespaceSelector is unset, so every ModelDeployment naming this policy is refused (PolicyNotBound)"
  return hs
end
hs.status = "Healthy"
if obj.spec.enforcement == "Audit" then
  hs.message = "In force in Audit mode: violations are admitted and reported, not refused"
else
  hs.message = "In force: models in the namespaces it binds answer to it"
end
return hs
