// The example risk rule, in JavaScript: combines facts and, when it has them, upstream
// decisions into a 0-100 risk score. Settings: `review_at` (default 50), `deny_at` (80).
// Reads `order.amount`, `customer.age_days`, `customer.verified`, `order.items` (array);
// upstream (optional): `amount-limit` and `sanctions`. Decides as
// plugins/examples/risk_score (Rust) does.
import { Decision, InvalidInput, log, num } from "../../../sdk/js/rulebox-rule.js";

export default class RiskScore {
  evaluate(req) {
    const reviewAt = req.setting("review_at", 50, "number");
    const denyAt = req.setting("deny_at", 80, "number");
    const amount = req.fact("order.amount", "number");
    const ageDays = req.factOpt("customer.age_days", "integer") ?? 0;
    if (ageDays < 0 || ageDays >= 2 ** 32) {
      throw new InvalidInput(`fact \`customer.age_days\`: ${ageDays} is out of range`);
    }
    const verified = req.factOpt("customer.verified", "boolean") ?? false;
    const items = req.factOpt("order.items", "array") ?? [];

    let score = 0;
    const factors = [];
    const add = (points, why) => {
      score += points;
      factors.push(`+${num(points)} ${why}`);
    };
    // Math.round rounds halves up, as Rust's f64::round does for positive numbers.
    if (amount > 1000) add(Math.round(Math.min(amount / 1000, 30)), "large amount");
    if (ageDays < 30) add(20, "new customer");
    if (!verified) add(15, "unverified customer");
    if (items.length > 20) add(10, "many items");
    const limit = req.upstream("amount-limit");
    if (limit !== undefined && limit.verdict !== "allow") add(25, "amount-limit did not allow");
    if (req.upstream("sanctions")?.verdict === "deny") add(100, "sanctions hit");
    score = Math.min(score, 100);
    log.debug(`risk score ${num(score)} from ${factors.length} factors`);
    const options = { score, output: { score, factors } };
    if (score >= denyAt) return Decision.deny(`risk score ${num(score)} at or above ${num(denyAt)}`, options);
    if (score >= reviewAt) return Decision.review(`risk score ${num(score)} at or above ${num(reviewAt)}`, options);
    return Decision.allow(options);
  }
}
