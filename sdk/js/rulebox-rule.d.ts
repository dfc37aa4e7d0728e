// Type declarations for rulebox-rule.js: write rules in TypeScript or get editor checks in
// JavaScript.

export type Verdict = "allow" | "deny" | "review" | "abstain";
export const VERDICTS: readonly Verdict[];
export type Kind = "number" | "integer" | "string" | "boolean" | "array" | "object";
type KindType<K extends Kind> = K extends "number" | "integer"
  ? number
  : K extends "string"
    ? string
    : K extends "boolean"
      ? boolean
      : K extends "array"
        ? unknown[]
        : Record<string, unknown>;

/** The input lacks or mistypes something the rule needs (`rule-error.invalid-input`). */
export class InvalidInput extends Error {}
/** The rule could not reach a decision (`rule-error.failed`). */
export class Failed extends Error {}

export interface DecisionOptions {
  score?: number;
  output?: unknown;
}

export class Decision {
  constructor(verdict: Verdict, options?: DecisionOptions & { reasons?: string[] });
  verdict: Verdict;
  score?: number;
  reasons: string[];
  output?: unknown;
  static allow(...args: [...reasons: string[], options: DecisionOptions] | string[]): Decision;
  static deny(...args: [...reasons: string[], options: DecisionOptions] | string[]): Decision;
  static review(...args: [...reasons: string[], options: DecisionOptions] | string[]): Decision;
  static abstain(...args: [...reasons: string[], options: DecisionOptions] | string[]): Decision;
}

export class Request {
  constructor(init?: {
    facts?: Record<string, unknown>;
    settings?: Record<string, unknown>;
    upstream?: Record<string, Decision>;
    document?: unknown;
  });
  fact(path: string): unknown;
  fact<K extends Kind>(path: string, kind: K): KindType<K>;
  factOpt(path: string): unknown | undefined;
  factOpt<K extends Kind>(path: string, kind: K): KindType<K> | undefined;
  readonly settings: Record<string, unknown>;
  setting(key: string): unknown;
  setting<T>(key: string, fallback: T): unknown | T;
  setting<K extends Kind, T>(key: string, fallback: T, kind: K): KindType<K> | T;
  upstream(rule: string): Decision | undefined;
  document(): unknown;
}

/** A rule: `export default class MyRule implements Rule { evaluate(req) { ... } }`. */
export interface Rule {
  evaluate(req: Request): Decision;
}

export function num(x: number): string;
export function sortedJson(value: unknown): string;
export const log: Record<"trace" | "debug" | "info" | "warn" | "error", (message: string) => void>;
export function exportRule(rule: new () => Rule, host?: { log(level: string, message: string): void }): unknown;
