{{/* Chart name, truncated to 63 characters (label values). */}}
{{- define "icmpwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: RELEASE-icmpwatch, or RELEASE if it already contains the chart name. Leaves room for
     the "-collector" suffix within 63 characters. */}}
{{- define "icmpwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "icmpwatch.agent.fullname" -}}{{ include "icmpwatch.fullname" . }}-agent{{- end -}}
{{- define "icmpwatch.collector.fullname" -}}{{ include "icmpwatch.fullname" . }}-collector{{- end -}}

{{- define "icmpwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "icmpwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: icmpwatch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels; "component" is agent or collector. */}}
{{- define "icmpwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "icmpwatch.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "icmpwatch.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "icmpwatch.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{ default (include "icmpwatch.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.agent.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "icmpwatch.collector.serviceAccountName" -}}
{{- if .Values.collector.serviceAccount.create -}}
{{ default (include "icmpwatch.collector.fullname" .) .Values.collector.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.collector.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* host:port of the collector's gRPC Service, as the agents dial it. */}}
{{- define "icmpwatch.collector.address" -}}
{{ include "icmpwatch.collector.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.collector.grpcPort }}
{{- end -}}

{{/* Secrets with tls.crt, tls.key and ca.crt for the collector and the agents (tls.mode != plaintext). */}}
{{- define "icmpwatch.collector.tlsSecret" -}}
{{- if eq .Values.tls.mode "existingSecrets" -}}
{{ required "tls.existingSecrets.collector: the collector's Secret (tls.crt, tls.key, ca.crt) is required with tls.mode=existingSecrets" .Values.tls.existingSecrets.collector }}
{{- else -}}
{{ include "icmpwatch.collector.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{- define "icmpwatch.agent.tlsSecret" -}}
{{- if eq .Values.tls.mode "existingSecrets" -}}
{{ required "tls.existingSecrets.agent: the agents' Secret (tls.crt, tls.key, ca.crt) is required with tls.mode=existingSecrets" .Values.tls.existingSecrets.agent }}
{{- else -}}
{{ include "icmpwatch.agent.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{/* The DNS names of the collector's Service, which its certificate carries. */}}
{{- define "icmpwatch.collector.dnsNames" -}}
{{- $svc := include "icmpwatch.collector.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{ toJson (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) "localhost") }}
{{- end -}}
