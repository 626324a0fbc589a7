{{/* Chart name, overridable. */}}
{{- define "kvstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: <release>-kvstore, or the release name when it already says kvstore. */}}
{{- define "kvstore.fullname" -}}
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

{{/* <fullname>-<suffix>, within 63 characters. Call with (list $ "suffix"). */}}
{{- define "kvstore.suffixed" -}}
{{- $top := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "kvstore.fullname" $top | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "kvstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release (add app.kubernetes.io/component per object). */}}
{{- define "kvstore.labels" -}}
helm.sh/chart: {{ include "kvstore.chart" . }}
{{ include "kvstore.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kvstore
{{- end }}

{{- define "kvstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kvstore.operator.selectorLabels" -}}
{{ include "kvstore.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kvstore.redis.selectorLabels" -}}
{{ include "kvstore.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The operator's ServiceAccount. Not <fullname> alone: the operator names each cluster's own
ServiceAccount <cluster>-kvstore, which is <fullname> for a cluster named after the release. */}}
{{- define "kvstore.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kvstore.suffixed" (list . "operator")) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The kvstore image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "kvstore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kvstore.redis.fullname" -}}
{{- include "kvstore.suffixed" (list . "redis") }}
{{- end }}

{{/* The managed Redis' URL, reachable from every namespace. */}}
{{- define "kvstore.redis.url" -}}
{{- printf "redis://%s.%s.svc.%s:%d" (include "kvstore.redis.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.redis.port) }}
{{- end }}

{{/* Name of the chart-made KVCluster: cluster.name, else the release name (checked: it names Services). */}}
{{- define "kvstore.clusterName" -}}
{{- $name := default .Release.Name .Values.cluster.name }}
{{- if or (gt (len $name) 40) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name)) }}
{{- fail (printf "cluster.name: the KVCluster name %q (the release name unless cluster.name is set) must be a DNS-1035 label of at most 40 characters: set cluster.name" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* Namespaces whose storage node pods the NetworkPolicy protects. */}}
{{- define "kvstore.networkPolicy.namespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- range .Values.networkPolicy.extraNamespaces }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/*
The operator's namespaced permissions (a ClusterRole, or a Role in operator.watchNamespace): the
objects it applies for each KVCluster (operator/specs/), including the ServiceAccount, Role and
RoleBinding that let the cluster's nodes and gateways read their partition-map ConfigMap. It can
grant those only because it holds them itself: the API server refuses any Role wider than that.
*/}}
{{- define "kvstore.operator.rules" -}}
- apiGroups: [kvstore.io]
  resources: [kvclusters, kvclusters/status, kvclusters/finalizers]
  verbs: [get, list, watch, update, patch]
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: ['']
  resources: [services, configmaps, persistentvolumeclaims, serviceaccounts]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: ['']
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: ['', events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, list, watch, create, update, patch, delete]
{{- /* each cluster's generated internal token and admin key: read by name, created once; no list or watch */}}
- apiGroups: ['']
  resources: [secrets]
  verbs: [get, create, patch]
{{- end }}

{{/* Who may reach a storage node: gateways and peer nodes of its namespace, the operator. */}}
{{- define "kvstore.networkPolicy.peers" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: kvstore
      app.kubernetes.io/component: gateway
- podSelector:
    matchLabels:
      app.kubernetes.io/name: kvstore
      app.kubernetes.io/component: node
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .Release.Namespace }}
  podSelector:
    matchLabels:
      {{- include "kvstore.operator.selectorLabels" . | nindent 6 }}
{{- end }}
