{{/* Prefix of every resource name. */}}
{{- define "gomark.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one service's resources: dict "root" $ "name" <service>. */}}
{{- define "gomark.svcname" -}}
{{- printf "%s-%s" (include "gomark.fullname" .root) .name -}}
{{- end -}}

{{/* Labels shared by everything in the release. */}}
{{- define "gomark.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: gomark
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one service: dict "root" $ "name" <service>. */}}
{{- define "gomark.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* All labels of one service. */}}
{{- define "gomark.labels" -}}
{{ include "gomark.commonLabels" .root }}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "gomark.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* gRPC URL of a peer service: dict "root" $ "name" <service>. */}}
{{- define "gomark.grpcUrl" -}}
{{- printf "http://%s:%v" (include "gomark.svcname" .) .root.Values.ports.grpc -}}
{{- end -}}
