{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Room is left for the longest suffix ("-dispatcher").
*/}}
{{- define "relay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "relay.labels" -}}
helm.sh/chart: {{ include "relay.chart" . }}
{{ include "relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mindvideo-relay
{{- end }}

{{- define "relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Component label of the pods behind the Service: "api" with split roles, else "all". */}}
{{- define "relay.apiComponent" -}}
{{- if .Values.roles.split }}api{{ else }}all{{ end }}
{{- end }}

{{/* Name of the Deployment that serves the API (the HPA's target). */}}
{{- define "relay.apiDeploymentName" -}}
{{- if .Values.roles.split }}{{ include "relay.fullname" . }}-api{{ else }}{{ include "relay.fullname" . }}{{ end }}
{{- end }}

{{/*
The Deployments to render: a list of {component, name, roles, replicaCount,
resources, api}. One all-roles Deployment, or one per role.
*/}}
{{- define "relay.workloads" -}}
{{- $fullname := include "relay.fullname" . }}
{{- $list := list }}
{{- if .Values.roles.split }}
{{- range $role := list "api" "poller" "dispatcher" }}
{{- $cfg := index $.Values.roles $role }}
{{- $list = append $list (dict "component" $role "name" (printf "%s-%s" $fullname $role) "roles" $role "replicaCount" $cfg.replicaCount "resources" $cfg.resources "api" (eq $role "api")) }}
{{- end }}
{{- else }}
{{- $list = append $list (dict "component" "all" "name" $fullname "roles" "api,poller,dispatcher" "replicaCount" .Values.replicaCount "resources" .Values.resources "api" true) }}
{{- end }}
{{- toJson (dict "items" $list) }}
{{- end }}

{{/* terminationGracePeriodSeconds: the relay's own grace plus 10 s of margin. */}}
{{- define "relay.terminationGracePeriodSeconds" -}}
{{- add (int .Values.config.shutdownGraceS) 10 }}
{{- end }}

{{/* RELAY_DATABASE_URL and RELAY_UPSTREAM_API_KEY from existing Secrets. */}}
{{- define "relay.secretEnv" -}}
- name: RELAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: the name of an existing Secret holding RELAY_DATABASE_URL" .Values.database.existingSecret | quote }}
      key: {{ required "database.secretKey is required: the key of the database URL in database.existingSecret" .Values.database.secretKey | quote }}
- name: RELAY_UPSTREAM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "upstream.existingSecret is required: the name of an existing Secret holding RELAY_UPSTREAM_API_KEY" .Values.upstream.existingSecret | quote }}
      key: {{ required "upstream.secretKey is required: the key of the MindVideo API key in upstream.existingSecret" .Values.upstream.secretKey | quote }}
{{- end }}

{{/* Non-secret RELAY_* settings, as a map of strings. */}}
{{- define "relay.configEnv" -}}
{{- $c := .Values.config -}}
RELAY_HOST: "0.0.0.0"
RELAY_PORT: "8080"
RELAY_UPSTREAM_URL: {{ $c.upstreamUrl | toString | quote }}
RELAY_POLL_INTERVAL_MIN_S: {{ $c.pollIntervalMinS | toString | quote }}
RELAY_POLL_INTERVAL_MAX_S: {{ $c.pollIntervalMaxS | toString | quote }}
RELAY_UPSTREAM_MAX_RPS: {{ $c.upstreamMaxRps | toString | quote }}
RELAY_WEBHOOK_TIMEOUT_S: {{ $c.webhookTimeoutS | toString | quote }}
RELAY_WEBHOOK_RETRY_SCHEDULE: {{ $c.webhookRetrySchedule | toString | quote }}
RELAY_WEBHOOK_DENY_CIDRS: {{ $c.webhookDenyCidrs | toString | quote }}
RELAY_LOG_FORMAT: {{ $c.logFormat | toString | quote }}
RELAY_LOG_LEVEL: {{ $c.logLevel | toString | quote }}
RELAY_SHUTDOWN_GRACE_S: {{ $c.shutdownGraceS | toString | quote }}
{{- end }}

{{/* Checks across values that the JSON Schema cannot express. */}}
{{- define "relay.validate" -}}
{{- $min := toString .Values.config.pollIntervalMinS }}
{{- $max := toString .Values.config.pollIntervalMaxS }}
{{- $plain := "^[0-9]+(\\.[0-9]+)?$" }}
{{- if and (regexMatch $plain $min) (regexMatch $plain $max) }}
{{- if gt (float64 $min) (float64 $max) }}
{{- fail "config.pollIntervalMinS must not exceed config.pollIntervalMaxS" }}
{{- end }}
{{- end }}
{{- if .Values.hpa.enabled }}
{{- if gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas) }}
{{- fail "hpa.minReplicas must not exceed hpa.maxReplicas" }}
{{- end }}
{{- if not (or .Values.hpa.targetCPUUtilizationPercentage .Values.hpa.targetMemoryUtilizationPercentage) }}
{{- fail "hpa.enabled needs hpa.targetCPUUtilizationPercentage or hpa.targetMemoryUtilizationPercentage" }}
{{- end }}
{{- end }}
{{- end }}
