{{- define "hubnode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hubnode.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hubnode.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hubnode.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: messaging-hub
{{- end -}}

{{- define "hubnode.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubnode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hubnode.secretName" -}}
{{- default (include "hubnode.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "hubnode.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hubnode.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hubnode.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The development Redis (redis.development.enabled). */}}
{{- define "hubnode.devRedisName" -}}
{{- printf "%s-redis" (include "hubnode.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hubnode.devRedisUrl" -}}
{{- printf "redis://%s:6379/0" (include "hubnode.devRedisName" .) -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: preStop sleep + SHUTDOWN_TIMEOUT + 5 s of
slack unless set; an explicit value below preStop + SHUTDOWN_TIMEOUT would
kill nodes mid-drain, so it is refused.
*/}}
{{- define "hubnode.terminationGracePeriodSeconds" -}}
{{- $need := add (int .Values.preStopSleepSeconds) (int .Values.config.shutdownTimeoutSeconds) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $need 5 -}}
{{- else if lt (int .Values.terminationGracePeriodSeconds) (int $need) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds + config.shutdownTimeoutSeconds (%d): Kubernetes would kill hubnode in the middle of its drain" (int .Values.terminationGracePeriodSeconds) (int $need)) -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
Checks across values that values.schema.json cannot express. Included by
every template that depends on them, so `helm template -s` fails too.
*/}}
{{- define "hubnode.validate" -}}
{{- $s := .Values.secrets -}}
{{- $redis := or .Values.redis.url $s.existingSecret .Values.redis.development.enabled -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if .Values.autoscaling.enabled -}}{{- $replicas = int .Values.autoscaling.maxReplicas -}}{{- end -}}
{{- if and (gt $replicas 1) (not $redis) -}}
{{- fail (printf "replicaCount=%d (or autoscaling.maxReplicas) needs Redis: hubnode nodes share rooms and presence through Redis, and without it a node sees only its own clients. Set redis.url, or put REDIS_URL in secrets.existingSecret, or use replicaCount=1" $replicas) -}}
{{- end -}}
{{- if and $s.existingSecret (or $s.jwtSecret $s.apiKey .Values.redis.url) -}}
{{- fail "secrets.existingSecret is set: put JWT_SECRET, API_KEY and REDIS_URL in that Secret and leave secrets.jwtSecret, secrets.apiKey and redis.url empty" -}}
{{- end -}}
{{- if and (not $s.existingSecret) (not $s.jwtSecret) -}}
{{- fail "secrets.jwtSecret (or secrets.existingSecret) is required: without JWT_SECRET hubnode runs in development mode with a random secret per pod" -}}
{{- end -}}
{{- if and .Values.redis.url .Values.redis.development.enabled -}}
{{- fail "set either redis.url or redis.development.enabled, not both" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (le (int .Values.ingress.proxyTimeoutSeconds) (int .Values.config.pingIntervalSeconds)) -}}
{{- fail (printf "ingress.proxyTimeoutSeconds (%d) must exceed config.pingIntervalSeconds (%d): the proxy would cut idle WebSockets between pings" (int .Values.ingress.proxyTimeoutSeconds) (int .Values.config.pingIntervalSeconds)) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}

{{/* Labels of the development Redis: its own name, so that hubnode's
selectors (Deployment, Service, PDB) never match its pod. */}}
{{- define "hubnode.devRedisSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-redis" (include "hubnode.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hubnode.devRedisLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hubnode.devRedisSelectorLabels" . }}
app.kubernetes.io/component: redis-development
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
