// The line writer crash-test children use moved to the package's test kit.
export { writeLineSync } from '../../src/testing/write-line-sync.ts';
