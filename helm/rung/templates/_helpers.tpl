{{/* Name of the release's objects: the release name, with "-rung" unless it has it. */}}
{{- define "rung.fullname" -}}
{{- if contains "rung" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-rung" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects are shared by all releases: their names carry the namespace. */}}
{{- define "rung.clusterName" -}}
{{- printf "rung-operator:%s:%s" .Release.Namespace .Release.Name -}}
{{- end -}}

{{- define "rung.selectorLabels" -}}
app.kubernetes.io/name: rung-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rung.labels" -}}
{{ include "rung.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* What the operator does in the namespaces it watches (rung operator's own needs). */}}
{{- define "rung.namespacedRules" -}}
# Rung's resources: status and metadata only, never a spec; Trials are created and deleted.
- apiGroups: [rung.dev]
  resources: [architecturesearches]
  verbs: [get, list, watch, patch, update]
# an ArchitectureSearch runs as a Study it owns: the operator creates that one
- apiGroups: [rung.dev]
  resources: [studies]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [rung.dev]
  resources: [trials]
  verbs: [get, list, watch, create, delete, patch, update]
- apiGroups: [rung.dev]
  resources: [studies/status, trials/status, architecturesearches/status]
  verbs: [get, patch, update]
# Trial pods: one per segment; results come back through the termination message and log.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete, patch, deletecollection]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The checkpoint credentials a Study names (spec.checkpoints.secretRef, --checkpoint-secret).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end -}}

{{/* kopf lists and watches CRDs and namespaces (reads only), whatever the watch scope. */}}
{{- define "rung.clusterReadRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
# the GPUs the nodes offer (status.allocatable), for sizing trials
- apiGroups: [""]
  resources: [nodes]
  verbs: [list]
{{- end -}}
