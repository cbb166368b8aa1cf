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

{{/*
terminationGracePeriodSeconds: the preStop pause (it counts against the grace period), the
relay's own grace, and 10 s of margin.
*/}}
{{- define "relay.terminationGracePeriodSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.config.shutdownGraceS) 10 }}
{{- end }}

{{/* The recommended labels of a pod of `component`: labels + component + podLabels. */}}
{{- define "relay.podLabels" -}}
{{- $root := .root }}
{{- include "relay.labels" $root }}
app.kubernetes.io/component: {{ .component }}
{{- with $root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Name of the Secret the chart creates from values (development only). */}}
{{- define "relay.devSecretName" -}}
{{ include "relay.fullname" . }}-secrets
{{- end }}

{{/*
Where each secret comes from: {secret, key}. A value given in values.yaml (development)
is put in the chart's own Secret; otherwise the existing Secret is required.
*/}}
{{- define "relay.secretRefs" -}}
{{- $db := dict "secret" (include "relay.devSecretName" .) "key" "database-url" }}
{{- if not .Values.database.url }}
{{- $db = dict "secret" (required "database.existingSecret is required: the name of an existing Secret holding RELAY_DATABASE_URL (or database.url, for development)" .Values.database.existingSecret) "key" (required "database.secretKey is required: the key of the database URL in database.existingSecret" .Values.database.secretKey) }}
{{- end }}
{{- $up := dict "secret" (include "relay.devSecretName" .) "key" "upstream-api-key" }}
{{- if not .Values.upstream.apiKey }}
{{- $up = dict "secret" (required "upstream.existingSecret is required: the name of an existing Secret holding RELAY_UPSTREAM_API_KEY (or upstream.apiKey, for development)" .Values.upstream.existingSecret) "key" (required "upstream.secretKey is required: the key of the MindVideo API key in upstream.existingSecret" .Values.upstream.secretKey) }}
{{- end }}
{{- toJson (dict "database" $db "upstream" $up) }}
{{- end }}

{{/* Where the secrets are mounted as files (secretsAsFiles=true). */}}
{{- define "relay.secretsDir" -}}/etc/relay/secrets{{- end }}

{{/*
RELAY_DATABASE_URL and RELAY_UPSTREAM_API_KEY: as files (`*_FILE`, the default: the values
never appear in the pod's environment) or as environment variables from the Secrets.
*/}}
{{- define "relay.secretEnv" -}}
{{- $refs := include "relay.secretRefs" . | fromJson }}
{{- if .Values.secretsAsFiles }}
- name: RELAY_DATABASE_URL_FILE
  value: {{ printf "%s/database-url" (include "relay.secretsDir" .) | quote }}
- name: RELAY_UPSTREAM_API_KEY_FILE
  value: {{ printf "%s/upstream-api-key" (include "relay.secretsDir" .) | quote }}
{{- else }}
- name: RELAY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $refs.database.secret | quote }}
      key: {{ $refs.database.key | quote }}
- name: RELAY_UPSTREAM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $refs.upstream.secret | quote }}
      key: {{ $refs.upstream.key | quote }}
{{- end }}
{{- end }}

{{/* The model schemas ConfigMap to mount, or nothing: chart-made from models.schemas, or existing. */}}
{{- define "relay.modelsConfigMap" -}}
{{- if .Values.models.existingConfigMap }}{{ .Values.models.existingConfigMap }}
{{- else if .Values.models.schemas }}{{ include "relay.fullname" . }}-models
{{- end }}
{{- end }}

{{- define "relay.modelsDir" -}}/etc/relay/models{{- end }}

{{/*
Volumes of a relay pod: /tmp, the secrets, the model schemas (not for the migration Job:
a chart-made ConfigMap does not exist yet when the pre-install hook runs) and extraVolumes.
Call with (dict "root" $ "models" true|false).
*/}}
{{- define "relay.volumes" -}}
{{- $root := .root }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $root.Values.tmpSizeLimit }}
{{- if $root.Values.secretsAsFiles }}
{{- $refs := include "relay.secretRefs" $root | fromJson }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ $refs.database.secret | quote }}
          items:
            - key: {{ $refs.database.key | quote }}
              path: database-url
      - secret:
          name: {{ $refs.upstream.secret | quote }}
          items:
            - key: {{ $refs.upstream.key | quote }}
              path: upstream-api-key
{{- end }}
{{- if .models }}
{{- with include "relay.modelsConfigMap" $root }}
- name: models
  configMap:
    name: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The mounts matching relay.volumes; same arguments. */}}
{{- define "relay.volumeMounts" -}}
{{- $root := .root }}
- name: tmp
  mountPath: /tmp
{{- if $root.Values.secretsAsFiles }}
- name: secrets
  mountPath: {{ include "relay.secretsDir" $root }}
  readOnly: true
{{- end }}
{{- if and .models (include "relay.modelsConfigMap" $root) }}
- name: models
  mountPath: {{ include "relay.modelsDir" $root }}
  readOnly: true
{{- end }}
{{- with $root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
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
RELAY_UNKNOWN_MODELS: {{ .Values.models.unknownModels | toString | quote }}
{{- if include "relay.modelsConfigMap" . }}
RELAY_MODEL_SCHEMAS_DIR: {{ include "relay.modelsDir" . | quote }}
{{- end }}
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
