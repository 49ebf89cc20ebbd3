#!/usr/bin/env node
// Independent FHIR R4 validation of the Bundles that transforms produces.
//
// Usage: node validate.js FILE_OR_DIR...
// Each argument is a JSON file (a FHIR resource, usually a Bundle) or a folder of them. Every
// Bundle entry's resource, and the Bundle itself with its entries' resources left out, is
// validated with the npm `fhir` package (FHIR.js): its validator checks each element against
// the R4 StructureDefinitions it ships (names, types, cardinality, primitive formats) and the
// codes of required bindings against the R4 value sets, and with `errorOnUnexpected` an
// element R4 does not define is an error too. It is not the code under test: it shares no
// code or model with fhirbolt, which transforms uses.
//
// Prints one line per error (file, resource, location, message; the messages name elements
// and codes, never values of the synthetic fixtures beyond the code that failed) and exits 1
// when any, 2 on a usage or read error, 0 when every resource is valid.
'use strict';

const fs = require('fs');
const path = require('path');
const { Fhir } = require('fhir');
const { Constants } = require('fhir/constants');

// FHIR.js 4.12.0 tests primitives with the R4 regexes unanchored, so "2026-06-15T08:00:00"
// (a time without the offset R4 requires) passes as a dateTime because a prefix of it matches.
// The R4 specification applies each regex to the whole value: anchor them (same patterns,
// decimal with the exponent R4 allows).
Constants.PrimitiveDateRegex =
  /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$/;
Constants.PrimitiveDateTimeRegex =
  /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$/;
Constants.PrimitiveTimeRegex = /^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?$/;
Constants.PrimitiveCodeRegex = /^[^\s]+(\s[^\s]+)*$/;
Constants.PrimitiveOidRegex = /^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$/;
Constants.PrimitiveIdRegex = /^[A-Za-z0-9\-.]{1,64}$/;
Constants.PrimitiveUnsignedIntRegex = /^(0|([1-9][0-9]*))$/;
Constants.PrimitiveIntegerRegex = /^(0|[-+]?[1-9][0-9]*)$/;
Constants.PrimitiveDecimalRegex = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;
// instant has no check in FHIR.js; R4's regex.
const INSTANT =
  /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$/;

const fhir = new Fhir();

// What FHIR.js leaves to a JSON schema: an element's JSON shape (an array exactly where R4
// allows more than one), strings that are not empty, and instants.
function shapeChecks(resource, property, where, value) {
  const out = [];
  const error = (message) => out.push({ location: where, severity: 'error', message });
  if (Array.isArray(value) !== Boolean(property._multiple)) {
    error(property._multiple ? 'Array expected' : 'Single value expected, array received');
  }
  for (const v of Array.isArray(value) ? value : [value]) {
    if (typeof v === 'string' && v.trim() === '') {
      error('Empty or blank string');
    }
    if (property._type === 'instant' && !INSTANT.test(v)) {
      error(`Invalid instant format for value "${v}"`);
    }
  }
  return out;
}

function filesOf(arg) {
  const stat = fs.statSync(arg);
  if (!stat.isDirectory()) {
    return [arg];
  }
  return fs
    .readdirSync(arg)
    .filter((name) => name.endsWith('.json'))
    .sort()
    .map((name) => path.join(arg, name));
}

function validate(resource) {
  const result = fhir.validate(resource, {
    errorOnUnexpected: true,
    onBeforeValidateProperty: shapeChecks,
  });
  return result.messages.filter((m) => m.severity === 'error' || m.severity === 'fatal');
}

function main(args) {
  if (args.length === 0) {
    console.error('usage: node validate.js FILE_OR_DIR...');
    return 2;
  }
  let resources = 0;
  const errors = [];
  for (const file of args.flatMap(filesOf)) {
    let json;
    try {
      json = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      console.error(`${file}: cannot read JSON: ${e.message}`);
      return 2;
    }
    const label = path.basename(file);
    const entries = json.resourceType === 'Bundle' && Array.isArray(json.entry) ? json.entry : [];
    entries.forEach((entry, i) => {
      if (!entry.resource) {
        return;
      }
      resources += 1;
      const where = `${label} entry[${i}] ${entry.resource.resourceType}`;
      for (const m of validate(entry.resource)) {
        errors.push(`${where} ${m.location}: ${m.message}`);
      }
    });
    // The Bundle's own elements (type, entry.fullUrl, entry.request…), its resources checked
    // above one by one so that each error names its entry.
    const shell = { ...json };
    if (entries.length > 0) {
      shell.entry = entries.map(({ resource, ...rest }) => rest);
    }
    resources += 1;
    for (const m of validate(shell)) {
      errors.push(`${label} ${json.resourceType} ${m.location}: ${m.message}`);
    }
  }
  for (const line of errors) {
    console.log(line);
  }
  console.log(`${resources} resources validated, ${errors.length} errors`);
  return errors.length === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
