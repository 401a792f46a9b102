import { describe, expect, it } from 'vitest';
import { expandNamePattern, maxPatternNames } from '../src/rules/name-pattern.js';

describe('a name pattern', () => {
  it.each([
    ['rack3-node{01..03}', ['rack3-node01', 'rack3-node02', 'rack3-node03']],
    ['n{8..11}', ['n8', 'n9', 'n10', 'n11']],
    ['n{098..100}-a', ['n098-a', 'n099-a', 'n100-a']],
    ['{0..1}x', ['0x', '1x']],
  ])('%s', (pattern, names) => {
    expect(expandNamePattern(pattern)).toEqual(names);
  });

  it.each([
    ['node', 'must hold one range of numbers in braces, e.g. rack3-node{01..40}'],
    ['n{1..2}-{1..2}', 'must hold one range of numbers in braces, e.g. rack3-node{01..40}'],
    ['n{1..2}}', 'must hold one range of numbers in braces, e.g. rack3-node{01..40}'],
    ['n{a..b}', 'must hold one range of numbers in braces, e.g. rack3-node{01..40}'],
    ['n{3..1}', 'the range {3..1} counts down: give the smaller number first'],
    ['n{1..99999999999999999999}', `the range {1..99999999999999999999} holds more than ${maxPatternNames} names`],
  ])('refuses %s', (pattern, message) => {
    expect(expandNamePattern(pattern)).toBe(message);
  });
});
