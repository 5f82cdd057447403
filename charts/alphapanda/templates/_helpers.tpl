{{/*
Names and labels only. Every object name, topic name and consumer-group name the chart renders
is computed here, once, so the templates (one per resource kind) cannot disagree about them.
*/}}

{{/*
Chart name, overridable (podinfo convention).
*/}}
{{- define "alphapanda.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release-wide objects (Redis, Secrets, ConfigMaps): the release name
if it already contains the chart name, else "<release>-<chart>", cut to a DNS label.
*/}}
{{- define "alphapanda.fullname" -}}
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
"name-version" for the helm.sh/chart label ("+" is not allowed in label values).
*/}}
{{- define "alphapanda.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: name + instance + component + broker. The broker label keeps the selectors of
two brokers' pipelines disjoint inside one release ("shared" for broker-independent parts).
Call with (dict "ctx" $ "component" "risk-manager" "broker" "paper").
*/}}
{{- define "alphapanda.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alphapanda.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
alphapanda.io/broker: {{ .broker | default "shared" }}
{{- end }}

{{/*
Common labels (Kubernetes recommended labels plus the selector labels). Same arguments.
*/}}
{{- define "alphapanda.labels" -}}
helm.sh/chart: {{ include "alphapanda.chart" .ctx }}
{{ include "alphapanda.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: alphapanda
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
Service account name of every pod.
*/}}
{{- define "alphapanda.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "alphapanda.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "alphapanda.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Release-wide object names.
*/}}
{{- define "alphapanda.redisName" -}}
{{- printf "%s-redis" (include "alphapanda.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "alphapanda.kiteSecretName" -}}
{{- .Values.kite.existingSecret | default (printf "%s-kite" (include "alphapanda.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}
{{- define "alphapanda.redisSecretName" -}}
{{- .Values.redis.external.existingSecret | default (printf "%s-redis-url" (include "alphapanda.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}
{{- define "alphapanda.strategiesName" -}}
{{- .Values.strategies.existingConfigMap | default (printf "%s-strategies" (include "alphapanda.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/*
A topic name as a DNS label: "paper.signals.raw" -> "paper-signals-raw".
*/}}
{{- define "alphapanda.topicDnsName" -}}
{{- . | replace "." "-" | replace "_" "-" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The dead-letter topic of a topic (alphapanda.topics.dlq) and the KafkaSink that writes it.
*/}}
{{- define "alphapanda.dlqTopic" -}}
{{- printf "%s.dlq" . }}
{{- end }}
{{- define "alphapanda.dlqSinkName" -}}
{{- printf "%s-dlq" (include "alphapanda.topicDnsName" .) }}
{{- end }}

{{/*
The enabled broker names as a JSON list. `brokers` may be a list or a comma-separated string
(`--set brokers=paper\,zerodha`). The checks mirror alphapanda.topics.validate_broker_name and
broker_kind so a bad name fails here, before anything reaches a cluster, with the message the
runtime would give.
*/}}
{{- define "alphapanda.brokers" -}}
{{- $known := list "paper" "zerodha" }}
{{- $raw := .Values.brokers }}
{{- $items := list }}
{{- if kindIs "string" $raw }}
{{- $items = splitList "," $raw }}
{{- else if $raw }}
{{- $items = $raw }}
{{- end }}
{{- $out := list }}
{{- range $items }}
{{- $b := trim (toString .) }}
{{- if $b }}
{{- if not (regexMatch "^[a-z][a-z0-9]*(-[a-z0-9]+)*$" $b) }}
{{- fail (printf "brokers: broker name %q is invalid: use lowercase letters, digits and dashes, starting with a letter (e.g. paper, zerodha, paper-replay)" $b) }}
{{- end }}
{{- $kind := first (splitList "-" $b) }}
{{- if not (has $kind $known) }}
{{- fail (printf "brokers: broker %q is of no known kind: its name must start with one of %s (e.g. paper, zerodha, paper-replay)" $b (join ", " $known)) }}
{{- end }}
{{- if has $b $out }}
{{- fail (printf "brokers: broker %q is named twice" $b) }}
{{- end }}
{{- $out = append $out $b }}
{{- end }}
{{- end }}
{{- if not $out }}
{{- fail "brokers: at least one broker is required, e.g. --set 'brokers={paper}' or --set brokers=paper\\,zerodha" }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The function instances to render, as a JSON list: one per shared function, one per
(broker-scoped function, broker). For each: its object name (a DNS label: "paper-risk-manager",
shared ones "strategy-runner"), the topics it consumes (topic templates of values.functions
expanded like alphapanda.topics.Subscription.topics) and its consumer group, named exactly as
alphapanda.topics.Subscription.consumer_group names it ("alphapanda-{broker|shared}-{function}").
A function whose brokerKinds do not match any enabled broker is not rendered at all.
*/}}
{{- define "alphapanda.instances" -}}
{{- $brokers := include "alphapanda.brokers" . | fromJsonArray }}
{{- $kinds := list }}
{{- range $brokers }}{{ $kinds = append $kinds (first (splitList "-" .)) }}{{ end }}
{{- $assetClasses := .Values.pipeline.assetClasses }}
{{- $out := list }}
{{- range $key := keys .Values.functions | sortAlpha }}
{{- /* Shallow override, key by key: mergeOverwrite would ignore a function's false or 0. */}}
{{- $fn := deepCopy $.Values.functionDefaults }}
{{- range $k, $v := get $.Values.functions $key }}{{ $_ := set $fn $k $v }}{{ end }}
{{- if $fn.enabled }}
{{- $dns := $key | replace "_" "-" }}
{{- if and (eq $fn.workload "deployment") $fn.subscribe }}
{{- fail (printf "functions.%s: a deployment workload cannot subscribe to topics (only Knative functions are KafkaSource sinks)" $key) }}
{{- end }}
{{- $owners := list }}
{{- if eq $fn.scope "shared" }}
{{- $match := not $fn.brokerKinds }}
{{- range $fn.brokerKinds }}{{ if has . $kinds }}{{ $match = true }}{{ end }}{{ end }}
{{- if $match }}{{ $owners = list "" }}{{ end }}
{{- else }}
{{- range $b := $brokers }}
{{- if or (not $fn.brokerKinds) (has (first (splitList "-" $b)) $fn.brokerKinds) }}
{{- $owners = append $owners $b }}
{{- end }}
{{- end }}
{{- end }}
{{- range $b := $owners }}
{{- $topics := list }}
{{- range $tpl := $fn.subscribe }}
{{- if and (contains "{broker}" $tpl) (not $b) }}
{{- fail (printf "functions.%s: a shared function cannot subscribe to the broker topic template %q" $key $tpl) }}
{{- end }}
{{- if contains "{asset_class}" $tpl }}
{{- range $ac := $assetClasses }}
{{- $topics = append $topics ($tpl | replace "{asset_class}" $ac | replace "{broker}" $b) }}
{{- end }}
{{- else }}
{{- $topics = append $topics ($tpl | replace "{broker}" $b) }}
{{- end }}
{{- end }}
{{- $name := ternary (printf "%s-%s" $b $dns) $dns (ne $b "") }}
{{- if gt (len $name) 63 }}
{{- fail (printf "functions.%s: object name %q is longer than 63 characters: use a shorter broker name" $key $name) }}
{{- end }}
{{- $kite := false }}
{{- if $fn.kite }}
{{- if $b }}{{ $kite = eq (first (splitList "-" $b)) "zerodha" }}{{ else }}{{ $kite = has "zerodha" $kinds }}{{ end }}
{{- end }}
{{- $out = append $out (dict
    "function" $key
    "component" $dns
    "broker" $b
    "name" $name
    "topics" $topics
    "consumerGroup" (printf "alphapanda-%s-%s" ($b | default "shared") $dns)
    "brokersEnv" (ternary $b (join "," $brokers) (ne $b ""))
    "kite" $kite
    "config" $fn) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Every topic (and its dead-letter topic) the enabled brokers use, as a JSON list: the chart's
counterpart of alphapanda.topics.all_topics.
*/}}
{{- define "alphapanda.allTopics" -}}
{{- $brokers := include "alphapanda.brokers" . | fromJsonArray }}
{{- $base := list }}
{{- range $tpl := .Values.pipeline.topics }}
{{- if contains "{asset_class}" $tpl }}
{{- range $ac := $.Values.pipeline.assetClasses }}{{ $base = append $base ($tpl | replace "{asset_class}" $ac) }}{{ end }}
{{- end }}
{{- end }}
{{- range $b := $brokers }}
{{- range $tpl := $.Values.pipeline.topics }}
{{- if contains "{broker}" $tpl }}{{ $base = append $base ($tpl | replace "{broker}" $b) }}{{ end }}
{{- end }}
{{- end }}
{{- $all := $base }}
{{- range $base }}{{ $all = append $all (include "alphapanda.dlqTopic" .) }}{{ end }}
{{- toJson $all }}
{{- end }}

{{/*
OTEL_RESOURCE_ATTRIBUTES of an instance: names that let Tempo and Prometheus tell the function
and the broker apart. Call with (dict "ctx" $ "inst" $inst).
*/}}
{{- define "alphapanda.otelResource" -}}
{{- $attrs := list (printf "service.namespace=%s" .ctx.Release.Namespace) (printf "alphapanda.function=%s" .inst.function) (printf "alphapanda.broker=%s" (.inst.broker | default "shared")) }}
{{- range $k, $v := .ctx.Values.otel.resourceAttributes }}{{ $attrs = append $attrs (printf "%s=%v" $k $v) }}{{ end }}
{{- join "," $attrs }}
{{- end }}

{{/*
Kafka bootstrap servers as a list (KafkaSource) or a comma string (KafkaSink, env); the value
may be given either way.
*/}}
{{- define "alphapanda.bootstrapList" -}}
{{- $v := .Values.kafka.bootstrapServers }}
{{- $l := list }}
{{- range (kindIs "string" $v | ternary (splitList "," (toString $v)) $v) }}{{ if trim . }}{{ $l = append $l (trim .) }}{{ end }}{{ end }}
{{- if not $l }}{{ fail "kafka.bootstrapServers: set the Kafka bootstrap servers, e.g. my-cluster-kafka-bootstrap.kafka.svc:9092" }}{{ end }}
{{- toJson $l }}
{{- end }}

{{/*
The Kite sandbox's object name (Deployment and Service).
*/}}
{{- define "alphapanda.kiteSandboxName" -}}
{{- printf "%s-kite-sandbox" (include "alphapanda.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The first zerodha broker, whose name labels the Kite sandbox, or empty when kiteSandbox is off.
The sandbox is one Kite app (one api key, one postback URL) for every zerodha broker, as a real
app is: each logs in to it, and order_updates gives each order's updates to its broker.
*/}}
{{- define "alphapanda.kiteSandboxBroker" -}}
{{- if .Values.kiteSandbox.enabled }}
{{- $zerodha := list }}
{{- range include "alphapanda.brokers" . | fromJsonArray }}{{ if eq (first (splitList "-" .)) "zerodha" }}{{ $zerodha = append $zerodha . }}{{ end }}{{ end }}
{{- if not $zerodha }}
{{- fail "kiteSandbox.enabled: the sandbox stands in for Kite for the zerodha brokers, but the brokers have none: add one, e.g. --set 'brokers={paper,zerodha}', or leave kiteSandbox off" }}
{{- end }}
{{- if eq (int .Values.kiteSandbox.port) (int .Values.kiteSandbox.wsPort) }}
{{- fail (printf "kiteSandbox: port and wsPort are both %v: the REST API and the ticker need a port each" .Values.kiteSandbox.port) }}
{{- end }}
{{- first $zerodha }}
{{- end }}
{{- end }}

{{/*
The Kite REST and ticker roots the credentialed pods use, as a JSON object: kite.root and
kite.wsRoot, else the in-cluster sandbox's Service when it is enabled, else empty (Kite's own).
*/}}
{{- define "alphapanda.kiteRoots" -}}
{{- $root := .Values.kite.root }}
{{- $wsRoot := .Values.kite.wsRoot }}
{{- if include "alphapanda.kiteSandboxBroker" . }}
{{- $host := printf "%s.%s.svc.cluster.local" (include "alphapanda.kiteSandboxName" .) .Release.Namespace }}
{{- $root = $root | default (printf "http://%s:%v" $host .Values.kiteSandbox.port) }}
{{- $wsRoot = $wsRoot | default (printf "ws://%s:%v" $host .Values.kiteSandbox.wsPort) }}
{{- end }}
{{- toJson (dict "root" $root "wsRoot" $wsRoot) }}
{{- end }}

{{/*
"true" when a strategies file is mounted into the pods (inline content or an existing ConfigMap),
else empty: the env template and both workload templates test the same thing.
*/}}
{{- define "alphapanda.strategiesMounted" -}}
{{- if or .Values.strategies.content .Values.strategies.existingConfigMap }}true{{ end }}
{{- end }}

{{/*
The environment of a function pod or the feed (a Knative Service's or a Deployment's container):
one list for both, so a setting added for one reaches the other. Takes (dict "ctx" $ "inst" $inst).
*/}}
{{- define "alphapanda.env" -}}
{{- $ctx := .ctx }}
{{- $inst := .inst }}
{{- $fn := $inst.config }}
{{- $bootstrap := include "alphapanda.bootstrapList" $ctx | fromJsonArray }}
{{- $redisExternal := or $ctx.Values.redis.external.url $ctx.Values.redis.external.existingSecret }}
{{- $strategies := include "alphapanda.strategiesMounted" $ctx -}}
- name: ALPHAPANDA_BROKERS
  value: {{ $inst.brokersEnv | quote }}
- name: ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS
  value: {{ join "," $bootstrap | quote }}
- name: ALPHAPANDA_REDIS__URL
  {{- if $redisExternal }}
  valueFrom:
    secretKeyRef:
      name: {{ include "alphapanda.redisSecretName" $ctx }}
      key: {{ $ctx.Values.redis.external.existingSecretKey }}
  {{- else }}
  value: {{ printf "redis://%s:6379/0" (include "alphapanda.redisName" $ctx) | quote }}
  {{- end }}
{{- if $strategies }}
- name: ALPHAPANDA_STRATEGIES_FILE
  value: /etc/alphapanda/strategies/{{ $ctx.Values.strategies.key }}
{{- end }}
{{- if $inst.kite }}
- name: ALPHAPANDA_KITE__API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "alphapanda.kiteSecretName" $ctx }}
      key: {{ $ctx.Values.kite.apiKeyKey }}
- name: ALPHAPANDA_KITE__API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "alphapanda.kiteSecretName" $ctx }}
      key: {{ $ctx.Values.kite.apiSecretKey }}
{{- $roots := include "alphapanda.kiteRoots" $ctx | fromJson }}
{{- with $roots.root }}
- name: ALPHAPANDA_KITE__ROOT
  value: {{ . | quote }}
{{- end }}
{{- with $roots.wsRoot }}
- name: ALPHAPANDA_KITE__WS_ROOT
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if $ctx.Values.otel.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ $inst.name | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "alphapanda.otelResource" (dict "ctx" $ctx "inst" $inst) | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $ctx.Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $ctx.Values.otel.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $ctx.Values.otel.tracesSampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $ctx.Values.otel.tracesSamplerArg | quote }}
- name: OTEL_METRIC_EXPORT_INTERVAL
  value: {{ $ctx.Values.otel.metricExportIntervalMs | quote }}
{{- else }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
{{- with $ctx.Values.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- with $fn.env }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}
