{{/* The release's full name: the release name, with the chart's name unless it already holds it. */}}
{{- define "detinfer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the operator's pod (never changed by an upgrade: selectors are immutable). */}}
{{- define "detinfer.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
The labels of every object the chart makes. Not app.kubernetes.io/part-of=detinfer: the operator
watches the objects carrying it (its engines' children), and must not watch its own pod.
*/}}
{{- define "detinfer.labels" -}}
{{ include "detinfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "detinfer.serviceAccountName" -}}
{{- default (include "detinfer.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "detinfer.image" -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- end -}}

{{/* The validation Jobs' image: the operator's own unless another is given. */}}
{{- define "detinfer.validatorImage" -}}
{{- if .Values.validatorImage.repository -}}
{{- printf "%s@%s" .Values.validatorImage.repository .Values.validatorImage.digest -}}
{{- else -}}
{{- include "detinfer.image" . -}}
{{- end -}}
{{- end -}}

{{/*
The operator's permissions, the same in the ClusterRole and in each namespace's Role. Each verb is
a call the operator makes; docs/install.md#rbac names the call site of each, and tests/chart
checks the list against the code.
*/}}
{{- define "detinfer.rules" -}}
# Its resources: watched (kopf index), re-read after a write conflict, status written.
- apiGroups: ["detinfer.io"]
  resources: ["deterministicinferenceservices"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["detinfer.io"]
  resources: ["deterministicinferenceservices/status"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion: the OwnerReferencesPermissionEnforcement admission plugin
# (OpenShift enables it) then requires update on the owner's finalizers.
- apiGroups: ["detinfer.io"]
  resources: ["deterministicinferenceservices/finalizers"]
  verbs: ["update"]
# The engine Deployment and Services: server-side apply (create, read, patch), watched; the
# overhead baseline Deployment is deleted by UID once measured.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "get", "patch", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "get", "patch", "list", "watch"]
# Each DIS's NetworkPolicies: server-side apply, watched; deleted by UID when switched off.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "get", "patch", "list", "watch", "delete"]
# The Deployment's ReplicaSets link engine pods to it: watched only.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch"]
# Validation Jobs: created, read when a name is taken, deleted by UID, watched.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "delete", "list", "watch"]
# Engine and validator pods are watched; the readiness gate is a condition on pods/status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* The labels of the monitoring.coreos.com objects: the chart's, and those a Prometheus selects them by. */}}
{{- define "detinfer.monitoringLabels" -}}
{{ include "detinfer.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The operator's series in PromQL: the job the ServiceMonitor gives them (the Prometheus Operator
names it after the Service). Not the namespace: the per-DIS series carry the DIS's (honorLabels).
*/}}
{{- define "detinfer.operatorJob" -}}
job="{{ include "detinfer.fullname" . }}-metrics"
{{- end -}}

{{/* The operator's own series (up, reconciliations), whose namespace is the target's. */}}
{{- define "detinfer.operatorTarget" -}}
{{ include "detinfer.operatorJob" . }}, namespace="{{ .Release.Namespace }}"
{{- end -}}
