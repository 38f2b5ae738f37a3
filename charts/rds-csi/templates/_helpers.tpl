{{/* Chart name. */}}
{{- define "rds-csi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-based unless overridden; "rds-csi" for a release named rds-csi. */}}
{{- define "rds-csi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rds-csi.labels" -}}
app.kubernetes.io/name: {{ include "rds-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "rds-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rds-csi.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rds-csi.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "rds-csi.sidecarImage" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}

{{- define "rds-csi.controllerServiceAccount" -}}
{{- if .Values.serviceAccount.controller.create -}}
{{- default (printf "%s-controller" (include "rds-csi.fullname" .)) .Values.serviceAccount.controller.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.controller.name -}}
{{- end -}}
{{- end -}}

{{- define "rds-csi.nodeServiceAccount" -}}
{{- if .Values.serviceAccount.node.create -}}
{{- default (printf "%s-node" (include "rds-csi.fullname" .)) .Values.serviceAccount.node.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.node.name -}}
{{- end -}}
{{- end -}}

{{/* Port of an ip:port metrics address, or "" when it is off. */}}
{{- define "rds-csi.metricsPort" -}}
{{- if and . (ne . "off") -}}
{{- regexReplaceAll "^.*:" . "" -}}
{{- end -}}
{{- end -}}

{{/* Host directory of the node plugin's socket. */}}
{{- define "rds-csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* CDI cloneStrategy of a StorageClass; call with (dict "ctx" $ "class" $sc).
The class's own value, else cdi.cloneStrategy, else csi-clone when snapshots
are on (the driver copies on the RDS, no pod moves the bytes), else copy. */}}
{{- define "rds-csi.cloneStrategy" -}}
{{- $auto := ternary "csi-clone" "copy" (.ctx.Values.snapshots.enabled | default false) -}}
{{- .class.cloneStrategy | default .ctx.Values.cdi.cloneStrategy | default $auto -}}
{{- end -}}

{{/* Directory of --backends-file (backends.json) and, in the controller
only, of each backend's SSH key as <name>/<secretKey>. */}}
{{- define "rds-csi.backendsDir" -}}
/etc/rds-csi/backends
{{- end -}}

{{/* Key inside a backend's SSH key Secret; call with the backends[] entry. */}}
{{- define "rds-csi.backendKey" -}}
{{- .sshKey.secretKey | default "id_ed25519" -}}
{{- end -}}

{{/* Every StorageClass the chart makes, as a JSON list for fromJsonArray:
the enabled storageClasses.<class>, then each backends[] entry's
storageClasses with the parameter backend: <name> added. storageclasses.yaml
and storageprofiles.yaml both range over it. */}}
{{- define "rds-csi.storageClasses" -}}
{{- $out := list -}}
{{- range $key := list "ext4" "block" "blockRwx" -}}
{{- $sc := index $.Values.storageClasses $key -}}
{{- if $sc.enabled -}}
{{- $out = append $out $sc -}}
{{- end -}}
{{- end -}}
{{- range $b := .Values.backends -}}
{{- range $sc := $b.storageClasses | default list -}}
{{- if or (not (hasKey $sc "enabled")) $sc.enabled -}}
{{- $params := merge (dict "backend" $b.name) (deepCopy ($sc.parameters | default dict)) -}}
{{- /* Only nodes that reach the backend (they carry its topology label) are
     chosen for its volumes, by the scheduler and the provisioner alike. */ -}}
{{- $reach := list (dict "matchLabelExpressions" (list (dict "key" (printf "rds.csi.srvlab.io/backend-%s" $b.name) "values" (list "true")))) -}}
{{- $out = append $out (merge (dict "parameters" $params "allowedTopologies" $reach) (deepCopy $sc)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $out -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "StorageClass %s is defined twice (storageClasses, backends[].storageClasses)" .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
