{{/* Names, labels and shared snippets; every helper is prefixed with the chart name. */}}

{{- define "async-image-classifier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "async-image-classifier.fullname" -}}
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

{{/* The name of one component's resources: <fullname>-<component>. */}}
{{- define "async-image-classifier.componentName" -}}
{{- printf "%s-%s" (include "async-image-classifier.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "async-image-classifier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "async-image-classifier.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "async-image-classifier.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "async-image-classifier.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: async-image-classifier
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The service image, tagged with the chart's appVersion unless image.tag says otherwise. */}}
{{- define "async-image-classifier.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "async-image-classifier.builderImage" -}}
{{- printf "%s:%s" .Values.defaultModel.image.repository (default .Chart.AppVersion .Values.defaultModel.image.tag) }}
{{- end }}

{{- define "async-image-classifier.secretName" -}}
{{- default (include "async-image-classifier.componentName" (dict "root" . "component" "secrets")) .Values.auth.existingSecret }}
{{- end }}

{{- define "async-image-classifier.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- include "async-image-classifier.componentName" (dict "root" . "component" "secrets") }}
{{- else }}
{{- required "externalRedis.existingSecret is required when redis.enabled is false" .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "async-image-classifier.redisPasswordKey" -}}
{{- if .Values.redis.enabled }}redis-password{{ else }}{{ .Values.externalRedis.existingSecretPasswordKey }}{{ end }}
{{- end }}

{{- define "async-image-classifier.redisHost" -}}
{{- include "async-image-classifier.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{- define "async-image-classifier.redisURL" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "async-image-classifier.redisHost" .) }}
{{- else }}
{{- required "externalRedis.url is required when redis.enabled is false" .Values.externalRedis.url }}
{{- end }}
{{- end }}

{{/* host:port of Redis, as KEDA's redis-streams trigger wants its address. */}}
{{- define "async-image-classifier.redisAddress" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s:6379" (include "async-image-classifier.redisHost" .) }}
{{- else }}
{{- $url := urlParse .Values.externalRedis.url }}
{{- if contains ":" $url.host }}{{ $url.host }}{{ else }}{{ printf "%s:6379" $url.host }}{{ end }}
{{- end }}
{{- end }}

{{/* The queue shards every process uses (QUEUE_SHARDS): queue.shards, or 16 on a Redis Cluster, 1 on one Redis. */}}
{{- define "async-image-classifier.queueShards" -}}
{{- .Values.queue.shards | default (ternary 16 1 .Values.externalRedis.cluster) | int }}
{{- end }}

{{/* "true" when the processes use sharded key names (a Redis Cluster, or more than one shard), else empty. */}}
{{- define "async-image-classifier.sharded" -}}
{{- if or .Values.externalRedis.cluster (gt (include "async-image-classifier.queueShards" . | int) 1) }}true{{ end }}
{{- end }}

{{/* The hash tag of each queue shard, as JSON ({"tags": [...]}): files/shard-tags.yaml, written by
tests/chart_shard_tags.py from the code's naming (Helm cannot compute a key's CRC16 slot). */}}
{{- define "async-image-classifier.shardTags" -}}
{{- $table := .Files.Get "files/shard-tags.yaml" | fromYaml }}
{{- $shards := include "async-image-classifier.queueShards" . }}
{{- dict "tags" (required (printf "files/shard-tags.yaml has no row for %s shards" $shards) (index $table $shards)) | toJson }}
{{- end }}

{{- define "async-image-classifier.tritonService" -}}
{{- include "async-image-classifier.componentName" (dict "root" . "component" "triton") }}
{{- end }}

{{- define "async-image-classifier.tritonBackends" -}}
{{- if .Values.triton.backends }}
{{- join "," .Values.triton.backends }}
{{- else if .Values.triton.gpu.enabled }}onnxruntime,tensorrt,python
{{- else }}onnxruntime,python
{{- end }}
{{- end }}

{{- define "async-image-classifier.modelsClaim" -}}
{{- default (include "async-image-classifier.componentName" (dict "root" . "component" "models")) .Values.models.persistence.existingClaim }}
{{- end }}

{{/* Where the operator mounts the models claim for pvc://CLAIM/PATH sources (PVC_MOUNT_ROOT). */}}
{{- define "async-image-classifier.pvcMountRoot" -}}/mnt/pvc{{- end }}

{{/* The env every process of the service image reads: settings from the ConfigMap, secrets from the Secret. */}}
{{- define "async-image-classifier.env" -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "async-image-classifier.redisSecretName" . }}
      key: {{ include "async-image-classifier.redisPasswordKey" . }}
- name: API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "async-image-classifier.secretName" . }}
      key: api-keys
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "async-image-classifier.secretName" . }}
      key: secret-key
{{- /* webhook signing secrets are sealed with SECRET_KEY unless the Secret holds a key of their own */}}
- name: WEBHOOK_SECRETS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "async-image-classifier.secretName" . }}
      key: webhook-secrets-key
      optional: true
- name: WEBHOOK_SECRETS_KEY_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ include "async-image-classifier.secretName" . }}
      key: webhook-secrets-key-previous
      optional: true
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* METRICS_PORT of a dispatcher or the operator: 0 (no listener) unless metrics.enabled. */}}
{{- define "async-image-classifier.metricsPort" -}}
{{- if .Values.metrics.enabled }}{{ .Values.metrics.port }}{{ else }}0{{ end }}
{{- end }}

{{/* The env that names a component's telemetry: OTEL_SERVICE_NAME (aic-<component>; the endpoint comes from the
ConfigMap) and, for a process with a /metrics port of its own (.metrics), METRICS_PORT: metrics.port where the
process serves its probes there too (.probes: the dispatcher), else 0 unless metrics.enabled. */}}
{{- define "async-image-classifier.telemetryEnv" -}}
- {name: OTEL_SERVICE_NAME, value: {{ printf "aic-%s" .component }}}
{{- if .probes }}
- {name: METRICS_PORT, value: {{ .root.Values.metrics.port | quote }}}
{{- else if .metrics }}
- {name: METRICS_PORT, value: {{ include "async-image-classifier.metricsPort" .root | quote }}}
{{- end }}
{{- end }}

{{- define "async-image-classifier.envFrom" -}}
- configMapRef:
    name: {{ include "async-image-classifier.componentName" (dict "root" . "component" "config") }}
{{- end }}

{{/* Pod-level fields shared by the service image's Pods. */}}
{{- define "async-image-classifier.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .root.Values.topologySpread.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ .root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "async-image-classifier.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* A PodDisruptionBudget when the component runs more than one replica. */}}
{{- define "async-image-classifier.pdb" -}}
{{- if and .root.Values.podDisruptionBudget.enabled (gt (int .replicas) 1) }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "async-image-classifier.componentName" . }}
  labels:
    {{- include "async-image-classifier.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "async-image-classifier.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Guards: value combinations that cannot work fail the render with a sentence saying why. */}}
{{- define "async-image-classifier.validate" -}}
{{- if and .Values.keda.enabled .Values.dispatcher.autoscaling.enabled }}
{{- fail "keda.enabled and dispatcher.autoscaling.enabled are mutually exclusive: KEDA creates its own HPA" }}
{{- end }}
{{- if and (not .Values.models.persistence.enabled) (gt (int .Values.triton.replicas) 1) }}
{{- fail "models.persistence.enabled=false keeps models in one Pod's emptyDir: triton.replicas must be 1" }}
{{- end }}
{{- if and (gt (int .Values.triton.replicas) 1) .Values.models.persistence.enabled (ne .Values.models.persistence.accessMode "ReadWriteMany") }}
{{- fail "more than one Triton replica reads one model repository: models.persistence.accessMode must be ReadWriteMany" }}
{{- end }}
{{- if and .Values.externalRedis.cluster .Values.redis.enabled }}
{{- fail "externalRedis.cluster needs an external Redis Cluster: the bundled Redis (redis.enabled) is one standalone server. Set redis.enabled=false and externalRedis.url to any node of the cluster (README \"Redis Cluster\")" }}
{{- end }}
{{- if .Values.externalRedis.cluster }}
{{- $db := (urlParse .Values.externalRedis.url).path | trimPrefix "/" | default "0" }}
{{- if or (ne $db "0") (ne (toString (.Values.config.REDIS_DB | default "0")) "0") }}
{{- fail "externalRedis.cluster: a Redis Cluster has database 0 only: drop the database from externalRedis.url (or make it /0) and config.REDIS_DB" }}
{{- end }}
{{- end }}
{{- if hasKey .Values.config "QUEUE_SHARDS" }}
{{- fail "set queue.shards, not config.QUEUE_SHARDS: the chart renders KEDA's shard triggers from it" }}
{{- end }}
{{- if hasKey .Values.config "REDIS_CLUSTER" }}
{{- fail "set externalRedis.cluster, not config.REDIS_CLUSTER" }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.externalRedis.url) }}
{{- fail "redis.enabled is false: set externalRedis.url (and externalRedis.existingSecret)" }}
{{- end }}
{{- if and (hasPrefix "file://" .Values.objectStore.url) (not .Values.objectStore.existingClaim) }}
{{- fail "a file:// objectStore.url is a directory every API and dispatcher Pod shares: set objectStore.existingClaim (a ReadWriteMany claim)" }}
{{- end }}
{{- if and .Values.objectStore.existingClaim (not (hasPrefix "file://" .Values.objectStore.url)) }}
{{- fail "objectStore.existingClaim is mounted for a file:// objectStore.url only" }}
{{- end }}
{{- if eq (default .Chart.AppVersion .Values.image.tag) "latest" }}
{{- fail "image.tag latest is refused: pin a version" }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}
{{- range .paths }}
{{- $path := trimSuffix "/" .path }}
{{- /* a Prefix (or a controller's own prefix match) that /metrics starts with, or /metrics itself */}}
{{- if or (and (eq .pathType "Exact") (eq $path "/metrics")) (and (ne .pathType "Exact") (hasPrefix $path "/metrics")) }}
{{- fail (printf "ingress path %s (%s) would publish the API's unauthenticated /metrics: route the API prefix and the page paths instead (see ingress.hosts in values.yaml)" .path .pathType) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The claim name in the default model's pvc:// source (emptyDir installs mount their volume under "models"). */}}
{{- define "async-image-classifier.sourceClaim" -}}
{{- if .Values.models.persistence.enabled }}{{ include "async-image-classifier.modelsClaim" . }}{{ else }}models{{ end }}
{{- end }}

{{/* The models volume as the operator and the default-model build mount it: read-write at /models and at
PVC_MOUNT_ROOT/<claim>, where pvc://<claim>/... sources are read. */}}
{{- define "async-image-classifier.modelsMounts" -}}
- {name: models, mountPath: /models}
- {name: models, mountPath: {{ printf "%s/%s" (include "async-image-classifier.pvcMountRoot" .) (include "async-image-classifier.sourceClaim" .) }}}
- {name: tmp, mountPath: /tmp}
{{- end }}

{{/* The operator's metrics port name: `metrics`, or `op-metrics` beside Triton, whose Pod has a `metrics` port. */}}
{{- define "async-image-classifier.operatorMetricsPortName" -}}
{{- if .Values.models.persistence.enabled }}metrics{{ else }}op-metrics{{ end }}
{{- end }}

{{- define "async-image-classifier.operatorContainer" -}}
- name: operator
  image: {{ include "async-image-classifier.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- include "async-image-classifier.command" (dict "root" . "args" (list "operator")) | nindent 2 }}
  ports:
    - {name: health, containerPort: 8080, protocol: TCP}
    {{- if .Values.metrics.enabled }}
    - {name: {{ include "async-image-classifier.operatorMetricsPortName" . }}, containerPort: {{ .Values.metrics.port }}, protocol: TCP}
    {{- end }}
  envFrom:
    {{- include "async-image-classifier.envFrom" . | nindent 4 }}
  env:
    {{- include "async-image-classifier.env" . | nindent 4 }}
    {{- include "async-image-classifier.telemetryEnv" (dict "root" . "component" "operator" "metrics" true) | nindent 4 }}
    - name: WATCH_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- if gt (int .Values.operator.replicas) 1 }}
    - name: OPERATOR_PEERING
      value: {{ include "async-image-classifier.componentName" (dict "root" . "component" "operator") }}
    {{- end }}
    {{- if not .Values.models.persistence.enabled }}
    - name: TRITON_URL
      value: 127.0.0.1:8001
    - name: TRITON_SERVICE
      value: ""
    {{- end }}
  # kopf's health endpoint (OPERATOR_HEALTH_PORT): it answers once the operator has started and logged in
  readinessProbe:
    httpGet: {path: /healthz, port: health}
    periodSeconds: 10
    failureThreshold: 3
  livenessProbe:
    httpGet: {path: /healthz, port: health}
    periodSeconds: 20
    failureThreshold: 3
  resources:
    {{- toYaml .Values.operator.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    {{- include "async-image-classifier.modelsMounts" . | nindent 4 }}
{{- end }}

{{/* Build the default model into /models/.default (a dot-directory: never taken for a model by Triton), then
register it as a ModelVersion whose source is that build, by its checksum. */}}
{{- define "async-image-classifier.defaultModelContainers" -}}
- name: build-default-model
  image: {{ include "async-image-classifier.builderImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [model, build, --repository, /models/.default]
  env:
    - {name: HOME, value: /tmp}
  resources:
    {{- toYaml .Values.defaultModel.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    {{- include "async-image-classifier.modelsMounts" . | nindent 4 }}
- name: register-default-model
  image: {{ include "async-image-classifier.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - models
    - register
    - /models/.default
    - --source-root
    - {{ printf "pvc://%s/.default" (include "async-image-classifier.sourceClaim" .) }}
  env:
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {cpu: 500m, memory: 256Mi}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    {{- include "async-image-classifier.modelsMounts" . | nindent 4 }}
{{- end }}

{{- define "async-image-classifier.tritonContainer" -}}
- name: triton
  image: {{ printf "%s:%s" .Values.triton.image.repository .Values.triton.image.tag }}
  imagePullPolicy: {{ .Values.triton.image.pullPolicy }}
  command: [tritonserver]
  args:
    - --model-repository=/models
    - --model-control-mode=explicit
    - --strict-readiness=true
    - --exit-on-error=false
    - --http-port=8000
    - --grpc-port=8001
    - --metrics-port=8002
    - --allow-metrics=true
    - --allow-gpu-metrics={{ .Values.triton.gpu.enabled }}
    {{- with .Values.tracing.otlpEndpoint }}
    - --trace-config=mode=opentelemetry
    - --trace-config=rate={{ int ($.Values.tracing.tritonRate | default 1) }}
    - --trace-config=level=TIMESTAMPS
    - --trace-config=opentelemetry,url={{ trimSuffix "/" . }}/v1/traces
    - --trace-config=opentelemetry,resource=service.name=triton
    {{- end }}
    {{- range .Values.triton.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - {name: http, containerPort: 8000, protocol: TCP}
    - {name: grpc, containerPort: 8001, protocol: TCP}
    - {name: metrics, containerPort: 8002, protocol: TCP}
  startupProbe:
    httpGet: {path: /v2/health/live, port: http}
    periodSeconds: 10
    failureThreshold: {{ max 1 (div (int .Values.triton.startupTimeoutSeconds) 10) }}
  readinessProbe:
    httpGet: {path: /v2/health/ready, port: http}
    periodSeconds: 5
    failureThreshold: 3
  livenessProbe:
    httpGet: {path: /v2/health/live, port: http}
    periodSeconds: 10
    failureThreshold: 3
  resources:
    requests:
      {{- toYaml .Values.triton.resources.requests | nindent 6 }}
    limits:
      {{- toYaml .Values.triton.resources.limits | nindent 6 }}
      {{- if .Values.triton.gpu.enabled }}
      nvidia.com/gpu: {{ .Values.triton.gpu.count }}
      {{- end }}
  securityContext:
    {{- /* the NGC image's triton-server user */}}
    {{- toYaml (merge (dict "runAsUser" 1000 "runAsGroup" 1000) .Values.containerSecurityContext) | nindent 4 }}
  volumeMounts:
    - {name: models, mountPath: /models, readOnly: true}
    - {name: shm, mountPath: /dev/shm}
    - {name: tmp, mountPath: /tmp}
{{- end }}

{{/* NetworkPolicy peers: the Pods of one component of this release. */}}
{{- define "async-image-classifier.peer" -}}
- podSelector:
    matchLabels:
      {{- include "async-image-classifier.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* NetworkPolicy ingress: networkPolicy.metricsFrom may scrape .ports. */}}
{{- define "async-image-classifier.metricsIngress" -}}
- from:
    {{- toYaml .root.Values.networkPolicy.metricsFrom | nindent 4 }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}

{{/* NetworkPolicy egress to the OTLP endpoint's port while tracing is on: the collector may run in the cluster (a
Pod) or outside it. */}}
{{- define "async-image-classifier.otlpEgress" -}}
{{- with .Values.tracing.otlpEndpoint }}
{{- $url := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $url.host | trimPrefix ":" | default (ternary "443" "80" (eq $url.scheme "https")) }}
- to:
    - namespaceSelector: {}
    - ipBlock: {cidr: 0.0.0.0/0}
  ports:
    - {protocol: TCP, port: {{ atoi $port }}}
{{- end }}
{{- end }}

{{/* A Prometheus Operator ServiceMonitor or PodMonitor (.kind) of one component, scraping /metrics on the port
named .port of the Services or Pods of .selects (default: the component itself). */}}
{{- define "async-image-classifier.monitor" -}}
{{- $selected := dict "root" .root "component" (default .component .selects) }}
apiVersion: monitoring.coreos.com/v1
kind: {{ .kind }}
metadata:
  name: {{ include "async-image-classifier.componentName" . }}
  labels:
    {{- include "async-image-classifier.labels" . | nindent 4 }}
    {{- with .root.Values.metrics.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "async-image-classifier.selectorLabels" $selected | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ .root.Release.Namespace }}]
  {{ if eq .kind "PodMonitor" }}podMetricsEndpoints{{ else }}endpoints{{ end }}:
    - port: {{ .port }}
      path: /metrics
      interval: {{ .root.Values.metrics.serviceMonitor.interval }}
{{- end }}

{{- define "async-image-classifier.dnsEgress" -}}
- to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end }}

{{- define "async-image-classifier.redisEgress" -}}
- to:
    {{- if .Values.redis.enabled }}
    {{- include "async-image-classifier.peer" (dict "root" . "component" "redis") | nindent 4 }}
    {{- else }}
    - ipBlock: {cidr: 0.0.0.0/0}
    {{- end }}
  ports:
    - {protocol: TCP, port: {{ if .Values.redis.enabled }}6379{{ else }}{{ (urlParse .Values.externalRedis.url).host | splitList ":" | last | default "6379" | atoi | default 6379 }}{{ end }}}
{{- end }}

{{- define "async-image-classifier.publicEgress" -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          {{- toYaml .Values.networkPolicy.publicEgressExcept | nindent 10 }}
  ports:
    - {protocol: TCP, port: 443}
{{- end }}

{{- define "async-image-classifier.kubeAPIEgress" -}}
- to:
    - ipBlock: {cidr: {{ .Values.networkPolicy.kubeAPIServerCIDR }}}
  ports:
    {{- range .Values.networkPolicy.kubeAPIServerPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}

{{/* How a container of the service image starts: `aic <args>`, or under watchfiles in Tilt's dev loop. */}}
{{- define "async-image-classifier.command" -}}
{{- if .root.Values.devReload }}
command: [watchfiles, --filter, python, {{ printf "aic %s" (join " " .args) | quote }}, /src/api, /src/operator]
{{- else }}
args: {{ toJson .args }}
{{- end }}
{{- end }}

{{/* The object store's settings and credentials (api and dispatchers; nothing while objectStore.url is empty):
the values as variables, then each of objectStore.secretKeys from objectStore.existingSecret, optional. */}}
{{- define "async-image-classifier.objectStoreEnv" -}}
{{- $store := .Values.objectStore }}
{{- if $store.url }}
- {name: OBJECT_STORE_URL, value: {{ $store.url | quote }}}
- {name: OBJECT_STORE_TIMEOUT_S, value: {{ $store.timeoutSeconds | toString | quote }}}
- {name: OBJECT_STORE_RETRY_TIMEOUT_S, value: {{ $store.retryTimeoutSeconds | toString | quote }}}
- {name: MAX_UPLOAD_SIZE, value: {{ int64 $store.maxUploadSize | toString | quote }}}
- {name: UPLOAD_URL_TTL_S, value: {{ $store.uploadUrlTtlSeconds | toString | quote }}}
- {name: UPLOAD_SWEEP_INTERVAL_S, value: {{ $store.sweepIntervalSeconds | toString | quote }}}
- {name: UPLOAD_STRAY_AGE_S, value: {{ $store.strayAgeSeconds | toString | quote }}}
{{- $given := dict }}
{{- with $store.endpoint }}
{{- $_ := set $given "AWS_ENDPOINT_URL" true }}
- {name: AWS_ENDPOINT_URL, value: {{ . | quote }}}
{{- end }}
{{- with $store.region }}
{{- $_ := set $given "AWS_REGION" true }}
- {name: AWS_REGION, value: {{ . | quote }}}
{{- end }}
{{- if $store.existingSecret }}
{{- range $store.secretKeys }}
{{- if not (hasKey $given .) }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $store.existingSecret }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* A file:// store's claim, mounted at the url's path (volumeMounts entry, then the volume). */}}
{{- define "async-image-classifier.objectStoreMount" -}}
{{- if hasPrefix "file://" .Values.objectStore.url }}
- {name: uploads, mountPath: {{ (urlParse .Values.objectStore.url).path | quote }}}
{{- end }}
{{- end }}

{{- define "async-image-classifier.objectStoreVolume" -}}
{{- if hasPrefix "file://" .Values.objectStore.url }}
- name: uploads
  persistentVolumeClaim:
    claimName: {{ .Values.objectStore.existingClaim }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress to the object store (not for a file:// one): networkPolicy.objectStoreTo on
networkPolicy.objectStorePorts and the endpoint's port. */}}
{{- define "async-image-classifier.objectStoreEgress" -}}
{{- $url := .Values.objectStore.url }}
{{- if and $url (not (hasPrefix "file://" $url)) }}
{{- $ports := list }}
{{- range .Values.networkPolicy.objectStorePorts }}
{{- $ports = append $ports (int .) }}
{{- end }}
{{- with .Values.objectStore.endpoint }}
{{- $endpoint := urlParse . }}
{{- $port := regexFind ":[0-9]+$" $endpoint.host | trimPrefix ":" | default (ternary "443" "80" (eq $endpoint.scheme "https")) }}
{{- $ports = append $ports (atoi $port) }}
{{- end }}
# the object store
- to:
    {{- toYaml .Values.networkPolicy.objectStoreTo | nindent 4 }}
  ports:
    {{- range uniq $ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end }}
