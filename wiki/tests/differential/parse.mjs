// Reads one JSON string per line on stdin, parses each with @bgm38/wiki, and writes one JSON line
// per input: {"type", "data"} in @bgm38/wiki's own shape, {"error": true} for a WikiSyntaxError,
// or {"crash": message} for anything else thrown (which the Rust side reports as a mismatch).
import { createInterface } from 'node:readline';
import { parse, WikiSyntaxError } from '@bgm38/wiki';

function shape(wiki) {
  return {
    type: wiki.type,
    data: wiki.data.map((field) =>
      field.array
        ? {
            key: field.key,
            array: true,
            values: (field.values ?? []).map((item) =>
              item.k === undefined ? { v: item.v } : { k: item.k, v: item.v },
            ),
          }
        : { key: field.key, value: field.value },
    ),
  };
}

const results = [];
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  const input = JSON.parse(line);
  let result;
  try {
    result = shape(parse(input));
  } catch (error) {
    result = error instanceof WikiSyntaxError ? { error: true } : { crash: String(error) };
  }
  results.push(JSON.stringify(result));
}
process.stdout.write(results.length ? results.join('\n') + '\n' : '');
