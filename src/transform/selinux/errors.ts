import { InputError } from '../../errors.js';

/** Errors of policy loading (composefs-rs fails the transform in the same situations). */
export class SelabelError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'SelabelError';
  }
}
