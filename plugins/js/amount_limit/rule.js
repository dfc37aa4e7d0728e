// The example amount rule, in JavaScript: deny orders over a limit, send large ones to
// review. Reads `order.amount` (number) and optionally `order.currency`; settings: `max`
// (default 5000), `review_above` (optional), `currencies` (optional allow-list). Decides as
// plugins/examples/amount_limit (Rust) does: tests/all/languages.rs checks it.
import { Decision, Failed, InvalidInput, num } from "../../../sdk/js/rulebox-rule.js";

const SETTINGS = ["max", "review_above", "currencies"];

export default class AmountLimit {
  evaluate(req) {
    const unknown = Object.keys(req.settings).filter((k) => !SETTINGS.includes(k)).sort();
    if (unknown.length > 0) {
      throw new Failed(`setting \`${unknown[0]}\`: unknown field, expected one of \`max\`, \`review_above\`, \`currencies\``);
    }
    const max = req.setting("max", 5000, "number");
    const reviewAbove = req.setting("review_above", undefined, "number");
    const currencies = req.setting("currencies", undefined, "array");
    const amount = req.fact("order.amount", "number");
    if (amount < 0) throw new InvalidInput(`order.amount ${num(amount)} is negative`);
    const currency = req.factOpt("order.currency", "string");
    if (currencies !== undefined && currency !== undefined && !currencies.includes(currency)) {
      return Decision.deny(`currency ${currency} is not accepted`);
    }
    const output = { score: amount / max, output: { amount, max } };
    if (amount > max) return Decision.deny(`amount ${num(amount)} over limit ${num(max)}`, output);
    if (reviewAbove !== undefined && amount > reviewAbove) {
      return Decision.review(`amount ${num(amount)} needs review`, output);
    }
    return Decision.allow(output);
  }
}
