{{/*
Chart name, at most 63 characters (a DNS label).
*/}}
{{- define "modelguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: "<release>-<chart>", or "<release>" when the release name
already contains the chart name; at most 63 characters.
*/}}
{{- define "modelguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "modelguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "modelguard.labels" -}}
helm.sh/chart: {{ include "modelguard.chart" . }}
{{ include "modelguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modelguard
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: immutable once a Deployment exists, so never add to them.
*/}}
{{- define "modelguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference, always repository@digest. Every model pod runs this image as its verifying init
container, so the operator refuses to start with one a moved tag could replace: a missing or
malformed digest fails the render here rather than installing an operator that cannot start. The
schema refuses a malformed digest already; this check also holds with --skip-schema-validation.
*/}}
{{- define "modelguard.image" -}}
{{- $digest := .Values.image.digest | default "" | toString }}
{{- if not $digest }}
{{- fail "image.digest is required: the operator image pinned by digest, \"sha256:\" followed by 64 lowercase hex digits (--set image.digest=sha256:<64 hex>). Every model pod runs this image to verify its files, so the operator refuses to start with an image referenced by tag." }}
{{- else if not (regexMatch "^sha256:[a-f0-9]{64}$" $digest) }}
{{- fail (printf "image.digest %q is malformed: expected \"sha256:\" followed by 64 lowercase hex digits" $digest) }}
{{- end }}
{{- printf "%s@%s" .Values.image.repository $digest }}
{{- end }}

{{/*
The CEL expression of the operator-deployments admission policy that admits a model pod template
only with the placement of modelPods, exactly: that nodeSelector, those tolerations in that order,
and none of the other pod fields that decide where a pod runs or whom it displaces there, none of
which the operator sets: nodeName, affinity, runtimeClassName (the RuntimeClass admission plugin
adds the class's scheduling tolerations and nodeSelector to each pod, after this policy saw the
Deployment), a scheduler other than the default, a priority class (preempting what else runs on
the pool), topology spread, scheduling gates, resource claims (a claim's devices pin the pod to
their node) and overhead. Keys and values are written into the expression as CEL strings, so
each is checked against the label grammar first (the schema does too; this check also holds with
--skip-schema-validation), and a value that is not one fails the render naming it.
*/}}
{{- define "modelguard.modelPodPlacement" -}}
{{- $key := "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$" }}
{{- $value := "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$" }}
{{- $selector := .Values.modelPods.nodeSelector | default dict }}
{{- $terms := list }}
{{- range $k := keys $selector | sortAlpha }}
{{- $v := get $selector $k | toString }}
{{- if not (regexMatch $key $k) }}
{{- fail (printf "modelPods.nodeSelector: %q is not a label key" $k) }}
{{- end }}
{{- if not (regexMatch $value $v) }}
{{- fail (printf "modelPods.nodeSelector[%s]: %q is not a label value" $k $v) }}
{{- end }}
{{- $terms = append $terms (printf "'%s': '%s'" $k $v) }}
{{- end }}
{{- if $terms }}
{{- printf "has(variables.pod.nodeSelector) && variables.pod.nodeSelector == {%s}" (join ", " $terms) }}
{{- else }}
{{- print "(!has(variables.pod.nodeSelector) || size(variables.pod.nodeSelector) == 0)" }}
{{- end }}
{{- $tolerations := .Values.modelPods.tolerations | default list }}
{{- printf " && size(variables.tolerations) == %d" (len $tolerations) }}
{{- range $i, $t := $tolerations }}
{{- $at := printf "variables.tolerations[%d]" $i }}
{{- $operator := get $t "operator" | default "Equal" | toString }}
{{- if not (has $operator (list "Equal" "Exists")) }}
{{- fail (printf "modelPods.tolerations[%d].operator: %q is not Equal or Exists" $i $operator) }}
{{- end }}
{{- range $field, $pattern := dict "key" $key "value" $value }}
{{- $given := get $t $field | default "" | toString }}
{{- /* No key with Exists tolerates every taint: the API server's rule, and the platform's choice. */}}
{{- if and (eq $field "key") (eq $given "") (eq $operator "Exists") }}
{{- else if not (regexMatch $pattern $given) }}
{{- fail (printf "modelPods.tolerations[%d].%s: %q is not a label %s" $i $field $given $field) }}
{{- end }}
{{- printf " && (has(%s.%s) ? %s.%s : '') == '%s'" $at $field $at $field $given }}
{{- end }}
{{- printf " && (has(%s.operator) ? %s.operator : 'Equal') == '%s'" $at $at $operator }}
{{- $effect := get $t "effect" | default "" | toString }}
{{- if not (has $effect (list "" "NoSchedule" "PreferNoSchedule" "NoExecute")) }}
{{- fail (printf "modelPods.tolerations[%d].effect: %q is not NoSchedule, PreferNoSchedule or NoExecute" $i $effect) }}
{{- end }}
{{- printf " && (has(%s.effect) ? %s.effect : '') == '%s'" $at $at $effect }}
{{- if hasKey $t "tolerationSeconds" }}
{{- $seconds := get $t "tolerationSeconds" }}
{{- /* Helm reads a number from a values file as float64, from --set as int64. A whole number
from 0 to 1e15 (exact in a float64) only: int64 of 1e20, -5, 1.5 or "true" would write another
number into the expression than the operator is given, and every Deployment would be refused. */}}
{{- $whole := false }}
{{- if or (kindIs "int64" $seconds) (kindIs "int" $seconds) }}
{{- $whole = and (ge (int64 $seconds) 0) (le (int64 $seconds) 1000000000000000) }}
{{- else if kindIs "float64" $seconds }}
{{- $whole = and (ge $seconds 0.0) (le $seconds 1e15) (eq (float64 (int64 $seconds)) $seconds) }}
{{- end }}
{{- if not $whole }}
{{- fail (printf "modelPods.tolerations[%d].tolerationSeconds: %v is not a whole number of seconds from 0 to 1000000000000000" $i $seconds) }}
{{- end }}
{{- printf " && has(%s.tolerationSeconds) && %s.tolerationSeconds == %d" $at $at (int64 $seconds) }}
{{- else }}
{{- printf " && !has(%s.tolerationSeconds)" $at }}
{{- end }}
{{- end }}
{{- print " && !has(variables.pod.nodeName) && !has(variables.pod.affinity)" }}
{{- print " && !has(variables.pod.runtimeClassName)" }}
{{- print " && (!has(variables.pod.schedulerName) || variables.pod.schedulerName == 'default-scheduler')" }}
{{- print " && !has(variables.pod.priorityClassName) && !has(variables.pod.priority)" }}
{{- print " && !has(variables.pod.preemptionPolicy)" }}
{{- print " && !has(variables.pod.topologySpreadConstraints) && !has(variables.pod.schedulingGates)" }}
{{- print " && !has(variables.pod.resourceClaims) && !has(variables.pod.overhead)" }}
{{- end }}

{{/*
"true" when the admission webhooks are registered. Only while an operator pod can answer them:
with failurePolicy Fail and no pod, every guarded write would be refused, the garbage
collector's and the namespace controller's deletes of managed children included, and namespaces
would hang in Terminating.
*/}}
{{- define "modelguard.webhooksRegistered" -}}
{{- if and .Values.webhook.enabled (gt (int .Values.replicaCount) 0) }}true{{ end }}
{{- end }}

{{/*
Name of the operator's ServiceAccount. With serviceAccount.create=false a name is required:
the chart binds RBAC to it, and must never grant the operator's permissions to "default".
*/}}
{{- define "modelguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false (the chart binds the operator's RBAC to it)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The audit log's name: the key name of its checkpoints and verifier key.
*/}}
{{- define "modelguard.auditLogName" -}}
{{- .Values.audit.logName | default (printf "%s/%s" .Release.Namespace (include "modelguard.fullname" .)) }}
{{- end }}

{{/*
The name prefix of the audit log's checkpoint ConfigMaps, also their `audit.modelguard.dev/log`
label value (at most 63 characters).
*/}}
{{/*
The Lease whose holder is the one replica that reconciles.
*/}}
{{- define "modelguard.leaseName" -}}
{{- include "modelguard.fullname" . }}
{{- end }}

{{- define "modelguard.auditPrefix" -}}
{{- printf "%s-audit" (include "modelguard.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Arguments of `modelguard run` (operator/modelguard/cli.py).
*/}}
{{- define "modelguard.args" -}}
- run
- --liveness=http://0.0.0.0:{{ .Values.health.port }}/healthz
- --readiness=http://0.0.0.0:{{ .Values.health.readinessPort }}/readyz
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --verify-concurrency={{ .Values.verification.concurrency }}
- --audit-checkpoint-records={{ .Values.audit.checkpoints.records }}
- --audit-checkpoint-seconds={{ .Values.audit.checkpoints.seconds }}
- --audit-checkpoints-prefix={{ include "modelguard.auditPrefix" . }}
- --backup-concurrency={{ .Values.backup.concurrency }}
- --backup-volume-root=/var/run/modelguard/backup-volumes
- --drill-scratch-dir=/var/run/modelguard/drill-scratch
{{- with (get (dict "verbose" "--verbose" "debug" "--debug") .Values.logLevel) }}
- {{ . }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator reads and writes. Granted cluster-wide
(ClusterRole) when watchNamespaces is empty, otherwise by a Role in each watched namespace.
Least privilege: no wildcards, exactly the verbs used. Children are created by the operator and
replaced whole with PUT when they must change (so create + update); they are never patched and
never deleted by the operator (garbage collection deletes them through their ownerReferences).
*/}}
{{- define "modelguard.namespacedRules" -}}
# Watch ModelDeployments; kopf records its progress annotations with PATCH.
- apiGroups: ["modelguard.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Signed ModelApprovals gate rollouts: read, and watched so an approval takes effect at once.
- apiGroups: ["modelguard.dev"]
  resources: ["modelapprovals"]
  verbs: ["get", "list", "watch"]
# Report observedGeneration and conditions: server-side apply on the status subresource.
- apiGroups: ["modelguard.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# Per-model ServiceAccount (no token, no RBAC), Service and NetworkPolicies: created by the
# operator (what it did not create is never its child), replaced whole when the intent changed or
# someone else changed them, and watched so that such an edit is reverted within seconds.
- apiGroups: [""]
  resources: ["serviceaccounts", "services"]
  verbs: ["get", "list", "watch", "create", "update"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update"]
# The model server Deployment (restricted pods, image by digest): as above, and watched because
# its rollout decides the model's Ready condition.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update"]
# The model pods' status: the verifying init container's refusal quarantines the model.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Which ReplicaSets the model's Deployment controls: a refusal counts only from their pods.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
# Events about ModelDeployments: ours through events.k8s.io/v1, kopf's own failures through
# core/v1.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
RBAC rules that only exist cluster-wide: kopf's own needs (see kopf's RBAC documentation).
*/}}
{{- define "modelguard.clusterRules" -}}
# kopf discovers the resources it serves and notices CRDs being added or removed at runtime.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# TrustPolicies are cluster-scoped: read to verify models, watched to re-verify on a change.
- apiGroups: ["modelguard.dev"]
  resources: ["trustpolicies"]
  verbs: ["get", "list", "watch"]
# BackupStores are cluster-scoped: read and watched to back models up there; kopf records its
# progress annotations with PATCH; the operator reports Ready on their status.
- apiGroups: ["modelguard.dev"]
  resources: ["backupstores"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modelguard.dev"]
  resources: ["backupstores/status"]
  verbs: ["patch"]
# kopf observes namespaces to follow namespaces being created or deleted; a model's namespace
# labels decide which TrustPolicies bind it (read each reconcile, watched for changes).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
