// Validate custom resources against the CRD schemas compiled into npm packages of
// kubernetes-models (generated from each project's CRDs):
//   monitoring.coreos.com (ServiceMonitor, PrometheusRule)  @kubernetes-models/prometheus-operator
//   keda.sh (ScaledObject, optional tenant autoscaling)      @kubernetes-models/keda
//
//   node deploy/ci/validate-crds.mjs <node_modules dir> <resources.json>
//
// resources.json: a JSON array of {"source": "...", "resource": {...}}. Prints one line per
// resource and exits 1 if any is invalid, 2 if a kind has no schema in the packages.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const PACKAGES = {
  "monitoring.coreos.com": "prometheus-operator",
  "keda.sh": "keda",
};

const [nodeModules, input] = process.argv.slice(2);
if (!nodeModules || !input) {
  console.error("usage: validate-crds.mjs <node_modules dir> <resources.json>");
  process.exit(2);
}

const items = JSON.parse(readFileSync(input, "utf8"));

let failed = 0;
let missing = 0;
for (const { source, resource } of items) {
  const [group, apiVersion] = resource.apiVersion.split("/");
  const name = `${resource.kind}/${resource.metadata?.name}`;
  const pkgName = `@kubernetes-models/${PACKAGES[group] ?? "(none)"}`;
  const pkgDir = path.join(nodeModules, ...pkgName.split("/"));
  let version = "?";
  let Model;
  try {
    version = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
    const modulePath = path.join(pkgDir, group, apiVersion, `${resource.kind}.js`);
    Model = (await import(pathToFileURL(modulePath).href))[resource.kind];
    if (!Model) throw new Error("no model");
  } catch (err) {
    console.log(`MISSING ${source} ${name}: no schema for ${resource.apiVersion} in ${pkgName}@${version}`);
    missing += 1;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`PASS ${source} ${name} against ${resource.apiVersion} CRD schema (${pkgName}@${version})`);
  } catch (err) {
    const details = (err.errors || []).map((e) => `${e.instancePath || "/"} ${e.message}`).join("; ");
    console.log(`FAIL ${source} ${name}: ${details || err.message}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : missing ? 2 : 0);
