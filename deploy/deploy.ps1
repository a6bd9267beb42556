<#
.SYNOPSIS
  Apply a Kustomize overlay, wait for the daemon's rollout, print its probe status.
  The PowerShell twin of deploy/deploy.sh (same steps, same options).

.EXAMPLE
  ./deploy/deploy.ps1 -Environment prod -Digest sha256:<64 hex digits>
  ./deploy/deploy.ps1 -Environment staging -Image myacr.azurecr.io/safetyamp-sync:1.4.0
  ./deploy/deploy.ps1 -Environment staging -DryRun
  ./deploy/deploy.ps1 -Environment prod -Rollback

.NOTES
  prod runs its image by digest only: without -Digest or an -Image ending in
  @sha256:<digest> nothing is applied. A dev overlay that uses the Secret redis-auth gets it
  created once, with a random password, if the namespace lacks it. ServiceMonitor and
  PrometheusRule are applied only when the cluster has the Prometheus Operator CRDs
  (monitoring.coreos.com). Needs kubectl with its built-in kustomize. See docs/deploy.md.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true, Position = 0)]
    [ValidateSet('dev', 'staging', 'prod')]
    [string] $Environment,
    # Run this image instead of the overlay's (a CI build's tag or digest).
    [string] $Image = '',
    # Run the overlay's image at this digest (fills prod's placeholder).
    [string] $Digest = '',
    # kubectl context (default: the current one).
    [string] $Context = '',
    [string] $Timeout = '300s',
    # Server-side dry run: the API server validates, nothing changes.
    [switch] $DryRun,
    # Print the manifests that would be applied and exit (no cluster needed).
    [switch] $RenderOnly,
    # kubectl rollout undo the daemon to its previous revision and wait.
    [switch] $Rollback
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Root = Split-Path -Parent $PSScriptRoot
$Overlay = Join-Path $Root "k8s/overlays/$Environment"
$Deployment = 'safetyamp-sync'
$CronJob = 'safetyamp-sync-batch'
$DigestEnvironments = @('prod')
$PlaceholderDigest = 'sha256:' + ('0' * 64)
# RFC 5737 documentation ranges: the overlays' placeholder egress destinations
$PlaceholderCidrs = 'cidr: "?((192\.0\.2|198\.51\.100|203\.0\.113)\.[0-9./]+)'

if ($Image -and $Digest) { throw 'give -Image or -Digest, not both' }
if ($Digest -and $Digest -notmatch '^sha256:[0-9a-f]{64}$') {
    throw "-Digest must be sha256:<64 hex digits> (the image is then run by digest), got $Digest"
}

if (-not (Get-Command kubectl -ErrorAction SilentlyContinue)) { throw 'kubectl is not installed' }
if (-not (Test-Path (Join-Path $Overlay 'kustomization.yaml'))) { throw "no overlay $Environment" }
$KubeArgs = @()
if ($Context) { $KubeArgs += @('--context', $Context) }
$Namespace = (Select-String -Path (Join-Path $Overlay 'kustomization.yaml') -Pattern '^namespace:\s*(\S+)' |
    Select-Object -First 1).Matches[0].Groups[1].Value
if (-not $Namespace) { throw "$Overlay/kustomization.yaml sets no namespace" }

function Say([string] $Text) { Write-Host "`n== $Text" }

function Invoke-Kubectl {
    param([Parameter(ValueFromRemainingArguments = $true)] [string[]] $Rest)
    & kubectl @KubeArgs @Rest | Out-Host
    if ($LASTEXITCODE -ne 0) { throw "kubectl $($Rest -join ' ') failed with exit code $LASTEXITCODE" }
}

function Get-Rendered {
    $out = (& kubectl kustomize $Overlay) -join "`n"
    if ($LASTEXITCODE -ne 0) { throw 'kubectl kustomize failed' }
    if ($Image) {
        # The daemon's and the CronJob's image: whatever the overlay set for safetyamp-sync.
        $out = [regex]::Replace($out, '(?m)^(\s*image: )\S*/?safetyamp-sync([:@]\S*)?$', "`${1}$Image")
    } elseif ($Digest) {
        # The overlay's repository at this digest (a tag, if any, is dropped: the digest rules).
        $out = [regex]::Replace($out, '(?m)^(\s*image: )([^\s@]*/?safetyamp-sync)(:[^\s@]*)?(@\S*)?$', "`${1}`${2}@$Digest")
    }
    return $out
}

# Create a Secret holding one random value (64 hex characters: safe inside a URL) unless
# the namespace has it already; the value goes to kubectl on stdin, never on a command line.
function New-RandomSecretIfMissing([string] $Name, [string] $Key) {
    & kubectl @KubeArgs -n $Namespace get secret $Name 2>$null | Out-Null
    if ($LASTEXITCODE -eq 0) { return }
    # The Secret's namespace must exist first: apply the overlay's Namespace on its own.
    $ns = ($Manifests -split '(?m)^---\s*$' | Where-Object { $_ -match '(?m)^kind: Namespace\s*$' }) -join "`n---`n"
    $ns | & kubectl @KubeArgs apply -f - | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "kubectl apply of the Namespace failed" }
    $bytes = [byte[]]::new(32)
    [System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)  # PowerShell 5.1 and 7
    $value = -join ($bytes | ForEach-Object { $_.ToString('x2') })
    $doc = "apiVersion: v1`nkind: Secret`nmetadata:`n  name: $Name`n  namespace: $Namespace`ntype: Opaque`nstringData:`n  ${Key}: $value`n"
    $doc | & kubectl @KubeArgs create -f - | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "kubectl create secret $Name failed" }
    Say "created Secret $Name in $Namespace (random $Key; kept in the cluster only)"
}

function Invoke-Probe([string] $Pod, [string] $Path) {
    $code = @"
import urllib.request, urllib.error
try:
    r = urllib.request.urlopen('http://127.0.0.1:8080$Path', timeout=10); code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
print(code, body.decode(errors='replace')[:3000])
"@
    # The image has python, not curl.
    & kubectl @KubeArgs -n $Namespace exec $Pod -c safetyamp-sync -- python -c $code 2>&1
}

function Show-Status {
    Say "pods in $Namespace"
    & kubectl @KubeArgs -n $Namespace get pods -l 'app.kubernetes.io/name=safetyamp-sync' -o wide | Out-Host
    $pod = & kubectl @KubeArgs -n $Namespace get pods -l 'app.kubernetes.io/component=daemon' `
        --field-selector=status.phase=Running -o 'jsonpath={.items[0].metadata.name}' 2>$null
    if (-not $pod) { Write-Host 'no running daemon pod'; return }
    Say "probe status of $pod"
    & kubectl @KubeArgs -n $Namespace get pod $pod `
        -o 'jsonpath={range .status.conditions[*]}{.type}={.status}{"  "}{end}{"\n"}restarts={.status.containerStatuses[0].restartCount}{"\n"}' | Out-Host
    Write-Host "/live   -> $(Invoke-Probe $pod '/live')"
    Write-Host "/ready  -> $(Invoke-Probe $pod '/ready')"
    Write-Host "/health -> $(Invoke-Probe $pod '/health')"
    Say 'CronJob'
    & kubectl @KubeArgs -n $Namespace get cronjob $CronJob | Out-Host
}

if ($Rollback) {
    Say "rolling $Deployment in $Namespace back to its previous revision"
    Invoke-Kubectl -n $Namespace rollout history "deployment/$Deployment"
    Invoke-Kubectl -n $Namespace rollout undo "deployment/$Deployment"
    Invoke-Kubectl -n $Namespace rollout status "deployment/$Deployment" "--timeout=$Timeout"
    Show-Status
    Write-Host "`nThe CronJob and ConfigMap are not rolled back by 'rollout undo': re-run this script"
    Write-Host 'with the previous -Image (or from the previous git revision) to align them.'
    exit 0
}

$Manifests = Get-Rendered
if ($Manifests -match 'azure\.workload\.identity/client-id: "?00000000-0000-0000-0000-') {
    Write-Warning "the ServiceAccount still has a placeholder workload-identity client id; set your managed identity's client id in k8s/overlays/$Environment (docs/deploy.md)."
}
$cidrs = [regex]::Matches($Manifests, $PlaceholderCidrs) | ForEach-Object { $_.Groups[1].Value } | Sort-Object -Unique
if ($cidrs) {
    Write-Warning "the NetworkPolicy still has a placeholder egress destination ($($cidrs -join ' ')): SQL Server or Redis is unreachable until you set its address in k8s/overlays/$Environment (docs/deploy.md, 'Network policy')."
}
if ($DigestEnvironments -contains $Environment) {
    $images = [regex]::Matches($Manifests, '(?m)^\s*image: (\S*safetyamp-sync\S*)$') | ForEach-Object { $_.Groups[1].Value } | Sort-Object -Unique
    foreach ($img in $images) {
        if ($img.EndsWith("@$PlaceholderDigest") -or $img -notmatch '@sha256:[0-9a-f]{64}$') {
            if ($RenderOnly) {
                Write-Warning "$img is not a real digest (placeholder image digest); $Environment is deployed by digest."
            } else {
                throw "$Environment runs its image by digest, and $img is not one: pass -Digest sha256:<digest> or -Image <repo>@sha256:<digest> (docs/deploy.md, 'Image pins')"
            }
        }
    }
}
if ($RenderOnly) { Write-Output $Manifests; exit 0 }

$crds = & kubectl @KubeArgs api-resources --api-group=monitoring.coreos.com -o name 2>$null
if (-not ($crds -match '^servicemonitors\.')) {
    Write-Warning 'no Prometheus Operator CRDs (monitoring.coreos.com) in this cluster: ServiceMonitor and PrometheusRule are skipped.'
    $docs = $Manifests -split '(?m)^---\s*$' | Where-Object { $_ -notmatch '(?m)^apiVersion: monitoring\.coreos\.com/' }
    $Manifests = $docs -join "`n---`n"
}

$applyArgs = @('apply', '-f', '-')
$mode = ''
if ($DryRun) { $applyArgs += '--dry-run=server'; $mode = ' (server dry run)' }
if ($Manifests -match 'name: redis-auth') {
    if ($DryRun) {
        Write-Warning 'dry run: the Secret redis-auth is not created (a real run creates it if missing)'
    } else {
        New-RandomSecretIfMissing 'redis-auth' 'password'
    }
}
Say "applying overlay $Environment to namespace $Namespace$mode"
$Manifests | & kubectl @KubeArgs @applyArgs | Out-Host
if ($LASTEXITCODE -ne 0) { throw 'kubectl apply failed' }
if ($DryRun) { exit 0 }

Say "waiting for the rollout of $Deployment (timeout $Timeout)"
& kubectl @KubeArgs -n $Namespace rollout status "deployment/$Deployment" "--timeout=$Timeout" | Out-Host
if ($LASTEXITCODE -ne 0) {
    Show-Status
    Say 'recent events'
    & kubectl @KubeArgs -n $Namespace get events --sort-by=.lastTimestamp | Select-Object -Last 20 | Out-Host
    throw "rollout did not finish; roll back with: ./deploy/deploy.ps1 -Environment $Environment -Rollback"
}
Show-Status
